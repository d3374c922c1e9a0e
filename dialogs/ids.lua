-- dialogs.ids: the uuids the store derives, in Lua. One UUIDv5 (RFC 9562, 5.5)
-- serves every derivation; the native module derives the same dialog ids
-- (src/ids.rs), and tests/lua/test_ids.lua pins both to shared vectors.
--
--   dialog_of_key(key)      the dialog a string key names (README, "Dialog keys")
--   dialog_of_pair(a, b)    the dialog of an unordered user pair
--   v5(namespace, name)     UUIDv5 of `name`'s bytes in `namespace`
--   v7_millis(bytes)        the Unix milliseconds of a UUIDv7 (a message id)
--   dialog_of_string(s)     the dialog a dialog_id string names (uuid or key)

local digest = require('digest')
local utf8 = require('utf8')
local uuid = require('uuid')

local M = {}

-- The namespace of the dialogs named by a string key: UUIDv5(KEY_NAMESPACE, the
-- key's UTF-8 bytes).
M.KEY_NAMESPACE = '2450fed4-12b1-4494-82cd-87a7412d823d'
-- The namespace of the dialog of a user pair: UUIDv5(PAIR_NAMESPACE, the two ids'
-- 16 bytes each, the smaller first).
M.PAIR_NAMESPACE = '891430a2-525c-5f8d-a17c-599239615dc5'

-- The longest string key, in bytes.
M.MAX_KEY_BYTES = 255

-- UUIDv5 of the byte string `name` in `namespace` (a uuid value or its canonical
-- string); returns a uuid value.
function M.v5(namespace, name)
    local ns = type(namespace) == 'string' and uuid.fromstr(namespace) or namespace
    local h = digest.sha1(ns:bin('b') .. name)
    local b = {h:byte(1, 16)}
    b[7] = bit.bor(bit.band(b[7], 0x0f), 0x50)
    b[9] = bit.bor(bit.band(b[9], 0x3f), 0x80)
    return uuid.frombin(string.char(unpack(b)), 'b')
end

-- The Unix milliseconds a UUIDv7 carries: its first 48 bits, big-endian, read
-- from its 16 bytes (`bytes`, as uuid:bin('b') gives them).
function M.v7_millis(bytes)
    local ms = 0
    for i = 1, 6 do
        ms = ms * 256 + bytes:byte(i)
    end
    return ms
end

-- The dialog named by the string key `key` (not checked here: the procedures
-- refuse a key that is empty, longer than MAX_KEY_BYTES, not UTF-8, or a uuid).
function M.dialog_of_key(key)
    return M.v5(M.KEY_NAMESPACE, key)
end

-- Length of a uuid's canonical (hyphenated) string form.
local CANONICAL_LEN = 36
local CANONICAL_PATTERN = '^' .. string.rep('%x', 8) .. '%-' .. string.rep('%x', 4) .. '%-'
    .. string.rep('%x', 4) .. '%-' .. string.rep('%x', 4) .. '%-' .. string.rep('%x', 12) .. '$'

-- True for a string meant as a uuid in another notation: `{...}` or `urn:uuid:...`
-- around, or alone, 32 to 36 characters that are all hex digits and hyphens (the
-- native procedures refuse such a dialog_id as a malformed uuid, src/args.rs).
local function looks_like_uuid(s)
    local inner = s:match('^{(.*)}$')
    if inner == nil and s:sub(1, 9):lower() == 'urn:uuid:' then
        inner = s:sub(10)
    end
    inner = inner or s
    return #inner >= 32 and #inner <= CANONICAL_LEN and inner:find('^[%x%-]+$') ~= nil
end

-- The dialog a dialog_id string names, read as the native procedures read it
-- (src/args.rs, dialog_id): a canonical uuid string is that uuid, any other
-- string a key (dialog_of_key). Returns the uuid and, when the procedures refuse
-- the string, why (nil when they accept it): the nil uuid, a uuid in another
-- notation, an empty key, a key over MAX_KEY_BYTES, a key that is not UTF-8. A
-- refused string still gets the uuid of its bytes (dialog_of_key), so that data
-- written under it elsewhere (the report's store took any string) has one dialog.
function M.dialog_of_string(s)
    if #s == CANONICAL_LEN and s:find(CANONICAL_PATTERN) then
        local u = uuid.fromstr(s)
        if not u:isnil() then
            return u
        end
        return M.dialog_of_key(s), 'the nil uuid'
    end
    local refused
    if looks_like_uuid(s) then
        refused = 'a uuid in another notation than the canonical one'
    elseif #s == 0 then
        refused = 'an empty key'
    elseif #s > M.MAX_KEY_BYTES then
        refused = string.format('a key over %d bytes', M.MAX_KEY_BYTES)
    elseif utf8.len(s) == nil then
        refused = 'a key that is not UTF-8'
    end
    return M.dialog_of_key(s), refused
end

-- The dialog of users `a` and `b` (uuid values or canonical strings), in either
-- order.
function M.dialog_of_pair(a, b)
    a = type(a) == 'string' and uuid.fromstr(a) or a
    b = type(b) == 'string' and uuid.fromstr(b) or b
    -- Big-endian bytes compare as Tarantool compares uuids.
    local ab, bb = a:bin('b'), b:bin('b')
    if bb < ab then
        ab, bb = bb, ab
    end
    return M.v5(M.PAIR_NAMESPACE, ab .. bb)
end

return M

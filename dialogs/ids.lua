-- dialogs.ids: the uuids the store derives, in Lua. One UUIDv5 (RFC 9562, 5.5)
-- serves every derivation; the native module derives the same dialog ids
-- (src/ids.rs), and tests/lua/test_ids.lua pins both to shared vectors.
--
--   dialog_of_key(key)      the dialog a string key names (README, "Dialog keys")
--   dialog_of_pair(a, b)    the dialog of an unordered user pair
--   v5(namespace, name)     UUIDv5 of `name`'s bytes in `namespace`

local digest = require('digest')
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

-- The dialog named by the string key `key` (not checked here: the procedures
-- refuse a key that is empty, longer than MAX_KEY_BYTES, not UTF-8, or a uuid).
function M.dialog_of_key(key)
    return M.v5(M.KEY_NAMESPACE, key)
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

-- dialogs.bucket: the vshard bucket of a dialog, and the bucket count of the data.
--
-- bucket_id = 1 + (w0 ^ w1 ^ w2 ^ w3) mod bucket_count, where w0..w3 are the
-- dialog id's 16 bytes read as four big-endian unsigned 32-bit words (docs/sharding.md,
-- "The bucket of a dialog"). The native new_dialog computes the same
-- (src/bucket.rs) for every message it stores; this copy serves the schema
-- migration that gives existing rows their bucket. tests/bucket_vectors.txt pins
-- both down.
--
-- The bucket count lives in _schema ('dialogs_bucket_count'), where the native
-- procedures read it: set once from the configuration, then fixed, because a
-- stored message's bucket must never change.

local M = {}

-- vshard's default, and ours.
M.DEFAULT_COUNT = 3000
M.MAX_COUNT = 1000000
M.KEY = 'dialogs_bucket_count'

local TWO_32 = 2 ^ 32

-- A big-endian unsigned 32-bit word of four bytes, as LuaJIT's bit operations
-- give it: a signed 32-bit number (the xor below needs no more).
local function word(b1, b2, b3, b4)
    return bit.bor(bit.lshift(b1, 24), bit.lshift(b2, 16), bit.lshift(b3, 8), b4)
end

-- The bucket of a dialog id (a uuid value or its canonical string). A uuid
-- value is read from its 16 bytes (the outbox's drainer asks for two buckets per
-- message: about 15 times cheaper than through its text).
function M.of(dialog_id, bucket_count)
    local x
    if type(dialog_id) == 'cdata' then
        local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 =
            dialog_id:bin('b'):byte(1, 16)
        x = bit.bxor(word(b1, b2, b3, b4), word(b5, b6, b7, b8), word(b9, b10, b11, b12),
            word(b13, b14, b15, b16))
    else
        local hex = tostring(dialog_id):gsub('-', '')
        x = 0
        for i = 1, 32, 8 do
            x = bit.bxor(x, tonumber(hex:sub(i, i + 7), 16))
        end
    end
    -- bit.bxor works on signed 32-bit numbers: back to unsigned.
    if x < 0 then
        x = x + TWO_32
    end
    return 1 + x % bucket_count
end

-- The bucket statuses under which a vshard storage owns a bucket's rows and may
-- change them (vshard's writable statuses): any other (sending, receiving, sent,
-- garbage, readonly) is a bucket on the move, whose rows vshard alone handles.
M.OWNED = {active = true, pinned = true}

-- A function telling whether this instance owns the rows of a bucket now: by
-- vshard's _bucket on a storage, every bucket (any id, nil included) where there
-- is no _bucket (a store that is not sharded). Reads _bucket only: it never
-- yields.
function M.owner()
    local buckets = box.space._bucket
    if buckets == nil then
        return function()
            return true
        end
    end
    return function(bucket_id)
        local t = bucket_id ~= nil and buckets:get{bucket_id} or nil
        return t ~= nil and M.OWNED[t[2]] == true
    end
end

-- The bucket count of the data, or nil before it has one.
function M.stored_count()
    local t = box.space._schema:get{M.KEY}
    return t and t[2]
end

-- Makes `count` the data's bucket count if it has none yet; refuses another
-- count than the stored one (`setting` names the setting in the error).
-- Writable instance only, as admin.
function M.store_count(count, setting)
    local stored = M.stored_count()
    if stored == nil then
        box.space._schema:replace{M.KEY, count}
    elseif stored ~= count then
        M.refuse(stored, count, setting)
    end
end

-- A replica checks what its master stored (nothing to check before its first sync).
function M.check_count(count, setting)
    local stored = M.stored_count()
    if stored ~= nil and stored ~= count then
        M.refuse(stored, count, setting)
    end
end

function M.refuse(stored, count, setting)
    error(string.format('dialogs: %s: the data is spread over %d buckets, which cannot '
        .. 'change for the life of the data; got %d', setting, stored, count), 0)
end

return M

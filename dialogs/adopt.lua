-- dialogs.adopt: opening a data directory written by the report's own Lua store
-- (docs/coming-from-the-report.md), in place, once.
--
-- The report's code (a plain `tarantool init.lua` on Tarantool 3) leaves: space
-- `dialogs` {id uuid, dialog_id string, user_from_id uuid, user_to_id uuid, text
-- string, created_at datetime} with a primary key on id; Lua functions new_dialog
-- and get_dialog; guest with execute on them and read, write, execute on
-- universe; a password for admin. This store keys a dialog by a uuid (a string key
-- names the uuid dialogs.ids derives), numbers messages with UUIDv7 ids in time
-- order and gives each its bucket_id. On the writable instance, as admin, before
-- the procedures are registered (dialogs.setup), in steps that are each
-- idempotent and logged with counts:
--
--   inspect   recognise the report's space, or an adoption a crash interrupted;
--             refuse a `dialogs` space that is neither the report's nor this
--             store's, saying what was found. Reads only: a refused directory is
--             left as it was.
--   prepare   drop the report's Lua functions, take back what guest was given
--             beyond Tarantool's defaults, remove admin's password (with it anyone
--             who knew that code could log in over the network as admin), then
--             rename the report's space aside (one statement) and index it by
--             (created_at, id), the order the messages move in.
--   (the store's own migrations then create its spaces, dialogs.schema)
--   move      messages in batches, oldest first; each batch is one transaction
--             that inserts the new tuples and deletes the old ones, so a crash
--             leaves every message in exactly one of the two spaces and the next
--             start continues with what is left. New ids are issued above the
--             greatest id in `dialogs`, so a continued move stays in order, and
--             the native new_dialog (whose floor is that greatest id) issues
--             later ones above them. The aside space is dropped once empty.
--
-- On Tarantool 3's road (`make run`), scripts/config-env.lua runs inspect and
-- prepare in a process of its own with no listener, before the configured
-- instance starts; with init.lua they are the first writes after box.cfg.
--
-- Test hooks (tests/python/test_adopt.py), read from the environment, unset in
-- any real use: DIALOGS_TEST_ADOPT_BATCH (messages per batch) and
-- DIALOGS_TEST_ADOPT_PAUSE_AFTER (the move stops for good after that many
-- batches and logs PAUSED_LOG_LINE, so that a kill -9 lands in the middle).

local digest = require('digest')
local fiber = require('fiber')
local log = require('log')
local uuid = require('uuid')

local bucket = require('dialogs.bucket')
local config = require('dialogs.config')
local ids = require('dialogs.ids')
local schema = require('dialogs.schema')

local M = {}

-- Messages moved per transaction: a transaction cannot yield, and 2 writes per
-- message (an insert, a delete) must stay well inside the fiber's slice (1 s on
-- Tarantool 3) even on a busy machine. The new tuples are computed before it,
-- yielding every COMPUTE_YIELD_EVERY messages.
M.BATCH = 250
local COMPUTE_YIELD_EVERY = 50
-- The dialog and bucket of at most this many keys are remembered at a time (a
-- dialog's messages are spread over the move; deriving them is the costly part).
local KEY_CACHE_SIZE = 100000
-- A progress line every this many batches.
local PROGRESS_EVERY_BATCHES = 10
-- Keys get_dialog refuses that the log names one by one (the rest are counted).
local REFUSED_KEYS_LOGGED = 10

-- Where the report's space waits while its messages move.
M.ASIDE = 'dialogs_report'
local ORDER_INDEX = 'adopt_order'

M.PAUSED_LOG_LINE = 'dialogs: adopting: paused'

-- The report's space, field by field.
local REPORT_FORMAT = {
    {'id', 'uuid'},
    {'dialog_id', 'string'},
    {'user_from_id', 'uuid'},
    {'user_to_id', 'uuid'},
    {'text', 'string'},
    {'created_at', 'datetime'},
}

local ADMIN_ID = 1
local GUEST_ID = 0
-- _user: {id, owner, name, type, auth, ...}; _priv: {grantor, grantee,
-- object_type, object_id, privileges}.
local USER_AUTH_FIELD = 5

------------------------------------------------------------------------------
-- Ids
------------------------------------------------------------------------------

local MILLIS_MAX = 2 ^ 48 - 1
local ID_BYTES = 16

-- Random bytes for the counters of new ids, read from the kernel RANDOM_POOL_BYTES
-- at a time rather than once per id.
local RANDOM_POOL_BYTES = 4096
local random_pool, random_at = '', 1

local function random_bytes(n)
    if random_at + n - 1 > #random_pool then
        random_pool, random_at = digest.urandom(RANDOM_POOL_BYTES), 1
    end
    local bytes = random_pool:sub(random_at, random_at + n - 1)
    random_at = random_at + n
    return bytes
end

-- A v7 id of `ms` with a random counter whose top bit is clear (room for the
-- increments within that millisecond), as the native generator starts one.
local function fresh_id(ms)
    local r = {random_bytes(10):byte(1, 10)}
    local b = {}
    for i = 6, 1, -1 do
        b[i] = ms % 256
        ms = math.floor(ms / 256)
    end
    b[7] = bit.bor(0x70, bit.band(r[1], 0x07))
    b[8] = r[2]
    b[9] = bit.bor(0x80, bit.band(r[3], 0x3f))
    for i = 10, 16 do
        b[i] = r[i - 6]
    end
    return string.char(unpack(b))
end

-- `bytes` with its 74-bit counter (rand_a ‖ rand_b) one higher, the same
-- millisecond, version 7 and variant set; nil when the counter is full.
local function next_in_millisecond(bytes)
    local b = {bytes:byte(1, ID_BYTES)}
    b[7] = bit.bor(0x70, bit.band(b[7], 0x0f))
    b[9] = bit.bor(0x80, bit.band(b[9], 0x3f))
    for i = ID_BYTES, 10, -1 do
        if b[i] < 0xff then
            b[i] = b[i] + 1
            return string.char(unpack(b))
        end
        b[i] = 0
    end
    -- Carries through the 6 bits of rand_b in byte 9, the 8 of rand_a in byte
    -- 8, the 4 of rand_a in byte 7.
    for _, c in ipairs({{9, 0x3f}, {8, 0xff}, {7, 0x0f}}) do
        local i, mask = c[1], c[2]
        if bit.band(b[i], mask) < mask then
            b[i] = b[i] + 1
            return string.char(unpack(b))
        end
        b[i] = bit.band(b[i], bit.bnot(mask))
    end
    return nil
end

-- Issues strictly increasing UUIDv7 ids (laid out as src/ids.rs lays out the
-- native ones: 48 bits of Unix milliseconds, the version, a 74-bit counter in
-- rand_a ‖ rand_b, the variant), each above `floor` (a uuid, or nil) and every id
-- issued before. `issue(ms)` stamps `ms` when that is ahead of them, else the
-- previous id's millisecond with the counter one higher. One writer only: the
-- adoption runs on the writable instance, before any client can write.
function M.issuer(floor)
    local last = floor ~= nil and floor:bin('b') or string.rep('\0', ID_BYTES)
    local function issue(ms)
        ms = math.max(0, math.min(math.floor(ms), MILLIS_MAX))
        local last_ms = ids.v7_millis(last)
        local id
        if ms > last_ms then
            id = fresh_id(ms)
        else
            id = next_in_millisecond(last)
        end
        -- A floor that is no v7 id (version bits above 7), or a full millisecond:
        -- the next millisecond.
        if id == nil or id <= last then
            if last_ms >= MILLIS_MAX then
                error('dialogs: adopting: message ids exhausted', 0)
            end
            id = fresh_id(last_ms + 1)
        end
        last = id
        return uuid.frombin(id, 'b')
    end
    return {issue = issue}
end

-- A datetime's Unix milliseconds.
local function millis_of(created_at)
    return created_at.epoch * 1000 + math.floor(created_at.nsec / 1e6)
end

------------------------------------------------------------------------------
-- inspect
------------------------------------------------------------------------------

local function describe_format(space)
    local fields = {}
    for _, f in ipairs(space:format()) do
        table.insert(fields, string.format('%s %s', tostring(f.name), tostring(f.type or 'any')))
    end
    local pk = space.index[0]
    local parts = {}
    for _, p in ipairs(pk and pk.parts or {}) do
        table.insert(parts, tostring(p.fieldno))
    end
    return string.format('format {%s}, primary key %s, %d tuples, engine %s',
        table.concat(fields, ', '),
        pk and string.format('%s on field %s', pk.name, table.concat(parts, ', ')) or 'none',
        pk and space:len() or 0, space.engine)
end

local function report_format_text()
    local fields = {}
    for _, f in ipairs(REPORT_FORMAT) do
        table.insert(fields, f[1] .. ' ' .. f[2])
    end
    return string.format('format {%s}, primary key on field 1, engine memtx',
        table.concat(fields, ', '))
end

-- True when `space` has the report's format and its primary key is the id alone.
local function is_report_space(space)
    local format = space:format()
    if #format ~= #REPORT_FORMAT or space.engine ~= 'memtx' then
        return false
    end
    for i, f in ipairs(REPORT_FORMAT) do
        if format[i].name ~= f[1] or format[i].type ~= f[2] then
            return false
        end
    end
    local pk = space.index[0]
    return pk ~= nil and #pk.parts == 1 and pk.parts[1].fieldno == 1
end

local function refuse(space, why)
    error(string.format("dialogs: the data directory holds a space '%s' that %s: %s. "
        .. "The report's store has %s. Nothing was changed; start the store on "
        .. 'another data directory, or move that data away first', space.name, why,
        describe_format(space), report_format_text()), 0)
end

-- What the data directory holds, read only: 'report' (the report's store),
-- 'resume' (an adoption a crash interrupted), or nil (this store's data, or
-- none). Refuses, with what it found, a `dialogs` space that is neither.
function M.inspect()
    local aside = box.space[M.ASIDE]
    if aside ~= nil then
        if not is_report_space(aside) then
            refuse(aside, "is not the report's messages set aside by an adoption")
        end
        return 'resume'
    end
    local s = box.space.dialogs
    if s == nil or schema.version() > 0 then
        return nil
    end
    if not is_report_space(s) then
        refuse(s, "is neither this store's (no schema version in _schema) nor the report's")
    end
    return 'report'
end

------------------------------------------------------------------------------
-- prepare
------------------------------------------------------------------------------

local PRIV_NAMES = {
    {'R', 'read'}, {'W', 'write'}, {'X', 'execute'}, {'S', 'session'}, {'U', 'usage'},
    {'C', 'create'}, {'D', 'drop'}, {'A', 'alter'}, {'REFERENCE', 'reference'},
    {'TRIGGER', 'trigger'}, {'INSERT', 'insert'}, {'UPDATE', 'update'},
    {'DELETE', 'delete'},
}

local function priv_text(mask)
    local names = {}
    for _, p in ipairs(PRIV_NAMES) do
        local b = box.priv[p[1]]
        if b ~= nil and bit.band(mask, b) ~= 0 then
            table.insert(names, p[2])
            mask = bit.band(mask, bit.bnot(b))
        end
    end
    if mask ~= 0 then
        table.insert(names, string.format('0x%x', mask))
    end
    return table.concat(names, ',')
end

-- The report's new_dialog and get_dialog (Lua, under the procedures' names).
local function drop_report_functions()
    local dropped = {}
    for _, name in ipairs(config.PROCEDURES) do
        local f = box.func[name]
        if f ~= nil and f.language ~= 'C' then
            -- Dropping a function also revokes every grant on it (guest's execute).
            box.schema.func.drop(name)
            table.insert(dropped, name)
        end
    end
    if #dropped > 0 then
        log.info("dialogs: adopting: dropped the report's Lua functions %s (and the grants "
            .. 'on them)', table.concat(dropped, ', '))
    end
end

-- Guest keeps what a new Tarantool gives it: the 'public' role, and session and
-- usage on universe (logging in). Everything else (the report granted read,
-- write, execute on universe) is taken back here, once, before the start-up goes
-- on; an explicit opt-in of this store grants guest its own later.
local function restrict_guest()
    local default_universe = box.priv.S + box.priv.U
    local public = box.space._user.index.name:get{'public'}
    local revoked = {}
    for _, p in box.space._priv:pairs({GUEST_ID}) do
        local object_type, object_id, mask = p[3], p[4], p[5]
        local keep = 0
        if object_type == 'universe' then
            keep = bit.band(mask, default_universe)
        elseif object_type == 'role' and public ~= nil and object_id == public[1] then
            keep = mask
        end
        if keep ~= mask then
            local key = {GUEST_ID, object_type, object_id}
            if keep == 0 then
                box.space._priv:delete(key)
            else
                box.space._priv:update(key, {{'=', 5, keep}})
            end
            table.insert(revoked, string.format('%s on %s%s',
                priv_text(bit.band(mask, bit.bnot(keep))), object_type,
                object_type == 'universe' and '' or ' ' .. tostring(object_id)))
        end
    end
    if #revoked > 0 then
        log.warn("dialogs: adopting: revoked from guest what the report's code granted: %s "
            .. '(%d grants); guest keeps only what a new Tarantool gives it',
            table.concat(revoked, '; '), #revoked)
    end
end

-- Admin logs in on the local console only (a new Tarantool's admin has no
-- password); the report's code gave it one, the same in every copy of that code.
local function remove_admin_password()
    local admin = box.space._user:get{ADMIN_ID}
    if admin ~= nil and next(admin[USER_AUTH_FIELD] or {}) ~= nil then
        box.space._user:update({ADMIN_ID}, {{'=', USER_AUTH_FIELD,
            setmetatable({}, {__serialize = 'map'})}})
        log.warn("dialogs: adopting: removed admin's password (set by the report's code, "
            .. 'known to anyone who has that code): admin has no password again and '
            .. 'cannot log in over the network, only on the local console')
    end
end

-- After inspect() found 'report' or 'resume': the report's access taken back,
-- its space aside and ordered. Writable instance, as admin.
function M.prepare()
    drop_report_functions()
    restrict_guest()
    remove_admin_password()
    if box.space[M.ASIDE] == nil then
        local s = box.space.dialogs
        log.info("dialogs: adopting the report's store: %d messages in space dialogs; "
            .. "renaming it to %s and moving them into this store's format", s:len(), M.ASIDE)
        s:rename(M.ASIDE)
    end
    box.space[M.ASIDE]:create_index(ORDER_INDEX, {
        type = 'TREE',
        unique = true,
        parts = {{field = 6, type = 'datetime'}, {field = 1, type = 'uuid'}},
        if_not_exists = true,
    })
end

------------------------------------------------------------------------------
-- move
------------------------------------------------------------------------------

-- Distinct dialogs in this store's space (its dialog_id_k is (dialog_id, id)).
local function count_dialogs(space)
    local n, t = 0, space.index.dialog_id_k:min()
    while t ~= nil do
        n = n + 1
        if n % COMPUTE_YIELD_EVERY == 0 then
            fiber.yield()
        end
        t = space.index.dialog_id_k:select({t[2]}, {iterator = 'GT', limit = 1})[1]
    end
    return n
end

-- Moves the messages of the aside space into `dialogs` (created by the
-- migrations), oldest first, and drops the aside space once empty. Nothing to
-- do when there is no aside space. Writable instance, as admin.
function M.move()
    local old = box.space[M.ASIDE]
    if old == nil then
        return
    end
    local new = box.space.dialogs
    local count = bucket.stored_count()
    local batch_size = config.test_setting('DIALOGS_TEST_ADOPT_BATCH', M.BATCH)
    local pause_after = config.test_setting('DIALOGS_TEST_ADOPT_PAUSE_AFTER', nil)
    local total = old:len()
    local already = new:len()
    log.info('dialogs: adopting: %d messages to move (%d moved before a restart), %d per '
        .. 'transaction', total, already, batch_size)
    local top = new.index.pk:max()
    local issuer = M.issuer(top and top[1])
    local order = old.index[ORDER_INDEX]
    local moved, batches = 0, 0
    -- Keys the procedures refuse (the report took any string): their dialogs are
    -- kept under the uuid of the key's bytes, and the first few named in the log.
    local refused, refused_in_order = {}, {}
    local keys, cached = {}, 0
    local function dialog_of(key)
        local k = keys[key]
        if k == nil then
            local dialog, why = ids.dialog_of_string(key)
            if why ~= nil and refused[key] == nil then
                refused[key] = true
                table.insert(refused_in_order, {key = key, dialog = dialog, why = why})
            end
            if cached >= KEY_CACHE_SIZE then
                keys, cached = {}, 0
            end
            k = {dialog = dialog, bucket = bucket.of(dialog, count)}
            keys[key], cached = k, cached + 1
        end
        return k
    end
    while true do
        if pause_after ~= nil and batches >= pause_after then
            log.warn('%s after %d batches (DIALOGS_TEST_ADOPT_PAUSE_AFTER)',
                M.PAUSED_LOG_LINE, batches)
            while true do
                fiber.sleep(3600)
            end
        end
        local batch = order:select({}, {limit = batch_size})
        if #batch == 0 then
            break
        end
        -- Only this fiber writes either space (guest and admin's password are
        -- gone, the procedures not registered yet): the batch stays as read.
        local rows = {}
        for i, t in ipairs(batch) do
            local k = dialog_of(t[2])
            rows[i] = {issuer.issue(millis_of(t[6])), k.dialog, t[3], t[4], t[5], t[6], k.bucket}
            if i % COMPUTE_YIELD_EVERY == 0 then
                fiber.yield()
            end
        end
        box.atomic(function()
            for i, t in ipairs(batch) do
                new:insert(rows[i])
                old:delete({t[1]})
            end
        end)
        moved = moved + #batch
        batches = batches + 1
        if batches % PROGRESS_EVERY_BATCHES == 0 then
            log.info('dialogs: adopting: %d of %d messages moved', moved, total)
        end
        fiber.yield()
    end
    old:drop()
    for i, r in ipairs(refused_in_order) do
        if i > REFUSED_KEYS_LOGGED then
            log.warn('dialogs: adopting: %d more keys that get_dialog refuses, each kept in '
                .. 'the dialog of its bytes (dialogs.ids.dialog_of_key)',
                #refused_in_order - REFUSED_KEYS_LOGGED)
            break
        end
        log.warn('dialogs: adopting: the key %q is %s, which get_dialog refuses: its '
            .. 'messages are kept in dialog %s (get_dialog reads it by that uuid)',
            r.key:sub(1, 80), r.why, r.dialog:str())
    end
    log.info("dialogs: adopted the report's store: %d messages moved (%d before a restart), "
        .. "new UUIDv7 ids in created_at order; the store holds %d messages in %d dialogs; "
        .. '%s dropped', moved, already, new:len(), count_dialogs(new), M.ASIDE)
end

return M

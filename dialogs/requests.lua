-- dialogs.requests: request ids (new_dialog's opts.request_id) expire.
--
-- Space dialogs_requests maps a request id to the message it stored, so that a
-- retry returns the first call's id. A row is kept for the request TTL, counted
-- from its message's id: a UUIDv7 whose first 48 bits are the Unix milliseconds
-- at which the message was stored. The index message_id (schema v2) orders rows
-- by that time, so the pruner walks from the oldest and stops at the first young
-- one, deleting in small transactions that yield. A retry after expiry finds no
-- row and stores the message anew.
--
-- On a vshard storage a row belongs to its bucket (its third field), and the
-- pruner deletes only rows of buckets this storage owns (active or pinned in
-- _bucket): a bucket being sent or received, or sent and waiting for garbage
-- collection, is vshard's to copy or delete, and its rows stay as they are until
-- the bucket is owned here again (or deleted with it).

local clock = require('clock')
local fiber = require('fiber')
local log = require('log')

local background = require('dialogs.background')
local bucket = require('dialogs.bucket')
local ids = require('dialogs.ids')

local M = {}

-- Rows deleted per transaction: a millisecond or two of work; each commit yields
-- for its WAL write, so other calls run between two batches. Large enough to
-- outpace the writes of a saturated server (under load a fiber gets one turn per
-- event-loop round, tens of milliseconds: measured by the soak, 100 per turn fell
-- behind 3,500 writes/s).
M.BATCH = 500
-- Bounds of the pause between two passes, seconds: a tenth of the TTL within them.
M.MIN_PERIOD_S = 0.1
M.MAX_PERIOD_S = 60

local FIBER = 'request_expiry'

-- The Unix milliseconds of a UUIDv7 (its first 48 bits, big-endian).
function M.uuid_v7_ms(u)
    return ids.v7_millis(u:bin('b'))
end

-- Seconds between two passes of the pruner for a TTL of `ttl` seconds.
function M.period(ttl)
    return math.min(M.MAX_PERIOD_S, math.max(M.MIN_PERIOD_S, ttl / 10))
end

-- Deletes the rows of dialogs_requests whose message is older than `ttl` seconds
-- at `now_ms` (Unix milliseconds; default: now) and whose bucket this instance
-- owns (dialogs.bucket.owner), oldest first. Each transaction looks at M.BATCH
-- rows at most: their buckets are read and their rows deleted with nothing that
-- yields before the commit, so a bucket's status cannot change in between; the
-- commit yields (or the pass does, when there was nothing to delete). Returns
-- how many it deleted. Writable instance only.
function M.prune(ttl, now_ms)
    local space = box.space.dialogs_requests
    local by_age = space.index.message_id
    local cutoff = (now_ms or clock.time() * 1000) - ttl * 1000
    local deleted = 0
    -- Where the next transaction looks from: rows before it are deleted or not
    -- owned here.
    local from = nil
    while true do
        local keys, looked, next_from = {}, 0, nil
        box.begin()
        local owned = bucket.owner()
        for _, t in by_age:pairs(from, {iterator = 'GE'}) do
            if M.uuid_v7_ms(t[2]) >= cutoff then
                break
            end
            if looked == M.BATCH then
                next_from = t[2]
                break
            end
            looked = looked + 1
            if owned(t[3]) then
                table.insert(keys, t[1])
            end
        end
        for _, k in ipairs(keys) do
            space:delete{k}
        end
        box.commit()
        deleted = deleted + #keys
        -- The end of the old rows; or no way past rows of one message id that
        -- are not owned here (never more than one row per message).
        if next_from == nil or (#keys == 0 and from ~= nil and next_from == from) then
            return deleted
        end
        from = next_from
        if #keys == 0 then
            fiber.yield()
        end
    end
end

local function ready()
    local space = box.space.dialogs_requests
    return space ~= nil and space.index.message_id ~= nil
end

-- What the pruner is doing, kept in its fiber's storage (so that it goes with
-- the fiber a restart replaces) and read by M.expiry_status.
M.WAITING_RW = 'waiting to be writable'
M.PRUNING = 'pruning'
M.SLEEPING = 'sleeping'

local function expiry_loop(ttl)
    local status = fiber.self().storage
    status.ttl, status.passes = ttl, 0
    local period = M.period(ttl)
    while true do
        -- A replica waits here, doing nothing, until it is made writable.
        status.state = M.WAITING_RW
        box.ctl.wait_rw()
        if ready() then
            status.state = M.PRUNING
            status.passes = status.passes + 1
            local ok, res = pcall(M.prune, ttl)
            if not ok and box.is_in_txn() then
                -- A batch that failed midway: its deletions are undone.
                box.rollback()
            end
            fiber.testcancel()
            if not ok then
                log.warn('dialogs: expiring request ids failed (retried in %gs): %s', period,
                    tostring(res))
            elseif res > 0 then
                log.verbose('dialogs: %d request ids expired', res)
            end
        end
        status.state = M.SLEEPING
        fiber.sleep(period)
    end
end

-- Starts (or restarts, with a new TTL) the instance's one pruner fiber. It runs
-- on every instance but deletes only while the instance is writable: a replica's
-- pruner waits in box.ctl.wait_rw() until a promotion.
function M.start_expiry(ttl)
    background.start(FIBER, expiry_loop, ttl)
end

-- What the instance's pruner is doing, for an operator or a test: {ttl =
-- seconds it keeps a request id, state = M.WAITING_RW, M.PRUNING or M.SLEEPING,
-- passes = passes begun since it started}; nil when no pruner runs.
function M.expiry_status()
    local f = background.get(FIBER)
    if f == nil then
        return nil
    end
    local s = f.storage
    return {ttl = s.ttl, state = s.state, passes = s.passes}
end

-- Stops the pruner (the data stays).
function M.stop_expiry()
    background.stop(FIBER)
end

return M

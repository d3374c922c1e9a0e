-- dialogs.outbox: on a vshard storage's master, the fiber that delivers the
-- outbox (docs/sharding.md, "The inbox across replica sets").
--
-- A message stored on a storage reaches its two users' inboxes later: the
-- storage writes an outbox row (its id and the dialog's bucket) in the
-- message's own transaction, and a mark_read writes one for the read receipt
-- its peer gets. This fiber takes the oldest rows, makes sure they are durable,
-- groups what they carry by the bucket of the user whose inbox it goes to, and
-- sends the groups of each destination replica set in ONE call to its master
-- (dialogs_storage_inbox_apply_many: every group applied in one transaction,
-- idempotent by message id, a group whose bucket is not writable there skipped
-- and named), found through a vshard router of its own (made here from the
-- storage's own sharding configuration, so with the credentials routers use);
-- the groups of buckets this replica set holds are applied in place the same
-- way. A group the batch refused (its bucket moving, or the router's idea of
-- where it lives stale) goes again on its own, through vshard's routing of its
-- bucket (dialogs_storage.inbox_apply), which waits for and follows a moving
-- bucket. Then it deletes the rows it delivered.
--
-- Order: the events for one destination bucket go in one group per round, in id
-- order, and a bucket whose call failed gets nothing more until its rows are
-- delivered (the next rounds start again from the oldest row), so every inbox
-- entry sees its dialog's messages in id order; events for other buckets go on.
-- A row's source bucket is held with a vshard write reference from the moment
-- the row is read until it is deleted, so that the bucket cannot move away with
-- rows in flight (a copy delivered again by the new owner after an older one
-- from here would be skipped as already delivered).
--
-- Idle cost: the fiber sleeps on a condition that a trigger on the outbox space
-- signals on every insert (a write, or a bucket arriving with its rows), as
-- does one on _bucket when a bucket becomes active here, and wakes on its own
-- only once a second to notice a change of the instance's read-only state.

local clock = require('clock')
local fiber = require('fiber')
local log = require('log')

local background = require('dialogs.background')
local bucket = require('dialogs.bucket')
local ids = require('dialogs.ids')

local M = {}

-- Rows taken per round (most rounds under load take fewer: what arrived since
-- the last one), and rows looked at per round at most, skipped ones included
-- (rows of buckets moving away, rows whose every destination is backing off).
M.BATCH = 500
M.WALK_LIMIT = 10 * M.BATCH
-- Calls in flight at once per round (one per destination replica set, then one
-- per bucket the batches refused).
M.MAX_IN_FLIGHT = 32
-- Seconds one delivery call may take, vshard's retries of a moving bucket included.
M.CALL_TIMEOUT_S = 2
-- Back-off of a destination bucket after a failed call, seconds: doubled after
-- each failure in a row, from MIN to MAX.
M.BACKOFF_MIN_S = 0.05
M.BACKOFF_MAX_S = 5
-- Seconds between two wake-ups while idle (to notice a change of the read-only
-- state or of the schema), and between two log lines about failures.
M.IDLE_WAKE_S = 1
M.LOG_EVERY_S = 10
-- Where a message event is polled for instead of signalled (a measurement's
-- alternative, docs/sharding.md "The delivery lag"): nil, or seconds between two
-- looks at the outbox while it is empty.
M.POLL_S = nil

-- The name of the fiber (dialogs.background) and of the vshard router object.
local FIBER = 'outbox'
M.ROUTER_NAME = 'dialogs_outbox'
-- Set in _schema once the inboxes are built (schema v5): deliveries start then.
M.BUILT_KEY = 'dialogs_inbox_built'
-- The storage function that applies one bucket's group of events, through
-- vshard.storage.call (dialogs.storage), and the native entry that applies the
-- groups of many buckets of a replica set, called directly on its master.
M.APPLY_FUNCTION = 'dialogs_storage.inbox_apply'
M.APPLY_MANY_FUNCTION = 'dialogs_storage_inbox_apply_many'
local SPACE = 'dialogs_outbox'
-- Event kinds of inbox_apply: a message, a read receipt.
local MESSAGE, RECEIPT = 'm', 'r'

-- State that outlives a reload of this module (one drainer per instance): the
-- condition the trigger signals, the trigger, the counters.
local GLOBAL = '__dialogs_outbox'
local function shared()
    local s = rawget(_G, GLOBAL)
    if s == nil then
        s = {
            cond = fiber.cond(),
            dirty = true,
            delivered = 0,
            events = 0,
            failures = 0,
            rounds = 0,
            batch_calls = 0,
            bucket_calls = 0,
            local_batches = 0,
            last_error = nil,
            last_error_time = nil,
            draining = false,
            -- Triggers set, by space name: {fn, space_id}.
            triggers = {},
        }
        rawset(_G, GLOBAL, s)
    end
    return s
end

-- Wakes the drainer: something may be deliverable now. Never yields.
local function signal()
    local s = shared()
    s.dirty = true
    s.cond:signal()
end

-- The triggers, by space: a row inserted into the outbox (by any transaction,
-- or by vshard receiving a bucket), and a bucket that became active here (one
-- received with rows, whose rows were skipped while it was receiving).
local TRIGGERS = {
    [SPACE] = function(old, new)
        if new ~= nil and old == nil then
            signal()
        end
    end,
    _bucket = function(_, new)
        if new ~= nil and bucket.OWNED[new[2]] then
            signal()
        end
    end,
}

-- Removes the triggers this module set (by any earlier load of it).
local function unwatch()
    local set = shared().triggers or {}
    for name, t in pairs(set) do
        local space = box.space[name]
        if space ~= nil and space.id == t.space_id then
            pcall(space.on_replace, space, nil, t.fn)
        end
        set[name] = nil
    end
end

-- Sets the triggers on the spaces that exist (replacing those of an earlier
-- load of this module; none while POLL_S is set); true when the outbox exists.
local function watch()
    if box.space[SPACE] == nil then
        return false
    end
    if M.POLL_S ~= nil then
        unwatch()
        return true
    end
    local s = shared()
    s.triggers = s.triggers or {}
    for name, fn in pairs(TRIGGERS) do
        local space = box.space[name]
        local t = s.triggers[name]
        if space ~= nil and (t == nil or t.fn ~= fn or t.space_id ~= space.id) then
            local old = t ~= nil and t.space_id == space.id and t.fn or nil
            space:on_replace(fn, old)
            s.triggers[name] = {fn = fn, space_id = space.id}
        end
    end
    return true
end

local function inbox_built()
    local t = box.space._schema:get{M.BUILT_KEY}
    return t ~= nil and t[2] == true
end

-- The Unix milliseconds of a UUIDv7 id, nil for another kind of id.
local function v7_millis(id)
    local bytes = id:bin('b')
    if bit.rshift(bytes:byte(7), 4) ~= 7 then
        return nil
    end
    return ids.v7_millis(bytes)
end

-- What metrics and operators read: rows waiting (`backlog`), the age of the
-- oldest in seconds (`oldest_age_s`, from its UUIDv7 id; nil when empty), rows
-- delivered and events applied since start, failed calls, the last error and
-- when (Unix seconds), whether this instance drains now (its master, once
-- the inboxes are built), and the deliveries' calls since start: to another
-- replica set's master with a round's groups for it (`batch_calls`), to one
-- bucket through vshard's routing, for a group a batch refused
-- (`bucket_calls`), and batches applied in place (`local_batches`).
function M.info()
    local s = shared()
    local space = box.space[SPACE]
    local backlog, age = 0, nil
    if space ~= nil then
        backlog = space:len()
        local oldest = space.index.pk:min()
        local ms = oldest ~= nil and v7_millis(oldest[1]) or nil
        if ms ~= nil then
            age = math.max(0, clock.time() - ms / 1000)
        end
    end
    return {
        backlog = backlog,
        oldest_age_s = age,
        delivered = s.delivered,
        events = s.events,
        failures = s.failures,
        rounds = s.rounds,
        batch_calls = s.batch_calls,
        bucket_calls = s.bucket_calls,
        local_batches = s.local_batches,
        last_error = s.last_error,
        last_error_time = s.last_error_time,
        draining = s.draining,
    }
end

------------------------------------------------------------------------------
-- The router deliveries go through
------------------------------------------------------------------------------

-- vshard's router object of this storage, configured as the storage is (the
-- same replica sets, uris and credentials), made on first use and reconfigured
-- when the storage's configuration changes (a replica set added). Discovery
-- runs once: afterwards vshard learns a moved bucket from the refusal of its
-- old replica set, as any router does.
local function router()
    local vshard = require('vshard')
    local current = vshard.storage.internal.current_cfg
    if current == nil then
        return nil, 'the vshard storage is not configured yet'
    end
    local r = vshard.router.internal.routers[M.ROUTER_NAME]
    local s = shared()
    if r ~= nil and s.router_cfg_source == current then
        return r
    end
    local cfg = {}
    for k, v in pairs(current) do
        cfg[k] = v
    end
    cfg.discovery_mode = 'once'
    cfg.box_cfg_mode = 'manual'
    if r == nil then
        r = vshard.router.new(M.ROUTER_NAME, cfg)
    else
        r:cfg(cfg)
    end
    s.router_cfg_source = current
    return r
end

------------------------------------------------------------------------------
-- One round
------------------------------------------------------------------------------

local function describe_error(err)
    if type(err) == 'table' then
        return string.format('%s%s', err.name and (tostring(err.name) .. ': ') or '',
            tostring(err.message or err.code))
    end
    return tostring(err)
end

-- Counts a failure and logs at most one line per LOG_EVERY_S (with how many
-- failures the silence covered).
local function failed(what, err)
    local s = shared()
    s.failures = s.failures + 1
    s.last_error = string.format('%s: %s', what, describe_error(err))
    s.last_error_time = clock.time()
    local now = fiber.clock()
    if s.logged_at == nil or now - s.logged_at >= M.LOG_EVERY_S then
        log.warn('dialogs: outbox: %s; retrying (failed calls since the last warning: %d)',
            s.last_error, s.failures - (s.logged_failures or 0))
        s.logged_at, s.logged_failures = now, s.failures
    end
end

-- Destination buckets backing off after a failure: bucket -> {until, delay}.
local backoff = {}

local function blocked(b, now)
    local t = backoff[b]
    return t ~= nil and now < t.until_s
end

-- The events of one outbox row, each with its destination bucket:
-- {{bucket, event}, ...}; nil if the row's message is not here (logged: the
-- row cannot be delivered, and is deleted).
local function events_of(row, messages, count)
    local user = row[3]
    if user ~= nil then
        return {{bucket.of(user, count), {RECEIPT, user, row[4], row[5]}}}
    end
    local m = messages:get{row[1]}
    if m == nil then
        return nil
    end
    local id, dialog, from, to, text = m[1], m[2], m[3], m[4], m[5]
    local out = {{bucket.of(from, count), {MESSAGE, from, id, dialog, from, to, text}}}
    if to ~= from then
        table.insert(out, {bucket.of(to, count), {MESSAGE, to, id, dialog, from, to, text}})
    end
    return out
end

-- The rows of one round, oldest first: those whose source bucket this storage
-- holds for writing (each bucket referenced once: `refs`), with their events;
-- rows whose message is missing go to `orphans`.
local function take(space, refs, count)
    local vstorage = require('vshard').storage
    local messages = box.space.dialogs
    local now = fiber.clock()
    local rows, orphans, walked = {}, {}, 0
    for _, t in space.index.pk:pairs() do
        if #rows >= M.BATCH or walked >= M.WALK_LIMIT then
            break
        end
        walked = walked + 1
        local b = t[2]
        if refs[b] == nil then
            refs[b] = vstorage.bucket_refrw(b) == true
        end
        if refs[b] then
            local evs = events_of(t, messages, count)
            if evs == nil then
                table.insert(orphans, t[1])
            else
                local open = false
                for _, e in ipairs(evs) do
                    open = open or not blocked(e[1], now)
                end
                if open then
                    table.insert(rows, {id = t[1], events = evs})
                end
            end
        end
    end
    return rows, orphans
end

-- The durability barrier: rewrites the newest row taken, unchanged, in a
-- transaction of its own. Tarantool commits a transaction only after every one
-- before it (the WAL and the synchronous queue keep their order) and rolls it
-- back with any of them, so once this commits, every row read before it is
-- committed (and confirmed by the quorum of a synchronous space): a row of a
-- write that failed is never delivered. An update, not a replace, so that a
-- row rolled back meanwhile is not written again. Returns true when committed.
local function barrier(space, id)
    local t = space:get{id}
    if t == nil then
        return false
    end
    local ok, res = pcall(space.update, space, {id}, {{'=', 2, t[2]}})
    return ok and res ~= nil, (not ok) and res or nil
end

-- Why a call to `replicaset`'s master would only wait for its timeout: the
-- master is not connected (its connection lost and being retried), as the
-- routers' check; nil otherwise. A round then does not wait CALL_TIMEOUT_S for
-- a replica set that is down.
local function master_down(replicaset)
    local master = replicaset ~= nil and replicaset.master or nil
    local conn = master ~= nil and master.conn or nil
    if conn ~= nil and conn.state == 'error_reconnect' then
        return string.format('UNREACHABLE_MASTER: the master %s is not connected: %s',
            tostring(master.name or master.uri), tostring(conn.error))
    end
    return nil
end

-- Runs job(item) for every item of `items`, at most MAX_IN_FLIGHT at once, this
-- fiber working too (one item makes no fiber); raises the first error a job
-- raised once all are done.
local function each_in_flight(items, job)
    local next_item = 0
    local function worker()
        while next_item < #items do
            next_item = next_item + 1
            job(items[next_item])
        end
    end
    local workers = {}
    for i = 1, math.min(M.MAX_IN_FLIGHT, #items) - 1 do
        local f = fiber.new(worker)
        f:set_joinable(true)
        workers[i] = f
    end
    local ok, e = pcall(worker)
    for _, f in ipairs(workers) do
        f:join()
    end
    if not ok then
        error(e, 0)
    end
end

-- Sends one group ({bucket, events, ok}) on its own and sets its `ok`: applied
-- here under a write reference when this storage holds the bucket writable,
-- else through vshard's routing of the bucket, which waits for and follows a
-- moving bucket.
local function send_one(r, g)
    local vstorage = require('vshard').storage
    local e
    if vstorage.bucket_refrw(g.bucket) then
        local apply = rawget(_G, 'dialogs_storage').inbox_apply
        local ok, value, refusal = pcall(apply, g.bucket, g.events)
        vstorage.bucket_unrefrw(g.bucket)
        if ok then
            e = refusal
        else
            e = value
        end
    else
        local ok, replicaset = pcall(r.route, r, g.bucket)
        e = master_down(ok and replicaset or nil)
        if e == nil then
            local s = shared()
            s.bucket_calls = s.bucket_calls + 1
            e = select(2, r:callrw(g.bucket, M.APPLY_FUNCTION, {g.bucket, g.events},
                {timeout = M.CALL_TIMEOUT_S}))
        end
    end
    if e == nil then
        g.ok = true
    else
        failed(string.format('delivery to bucket %d', g.bucket), e)
    end
end

-- Errors of a batch after which nothing of it was written and its groups may go
-- one bucket at a time: the entry's refusal of the whole call (1012), an
-- instance that is not the master (any more), an entry not there or not
-- granted (a storage of a release before it). Not vshard's own errors (its
-- codes are another numbering): a replica set without a known master fails the
-- batch, its buckets back off.
local BATCH_NOT_RUN = {
    [1012] = true,
    [1006] = true,
    [box.error.READONLY] = true,
    [box.error.LOADING] = true,
    [box.error.NO_SUCH_PROC] = true,
    [box.error.NO_SUCH_FUNCTION] = true,
    [box.error.ACCESS_DENIED] = true,
}

-- Says, at most once per LOG_EVERY_S, that a batch did not run and its groups
-- go one bucket at a time (a storage of an earlier release, a master that
-- changed): deliveries go on, at the cost of a call per bucket.
local function fell_back(where, err)
    local s = shared()
    local now = fiber.clock()
    if s.fallback_logged_at == nil or now - s.fallback_logged_at >= M.LOG_EVERY_S then
        log.warn('dialogs: outbox: %s: the batch did not run (%s); its buckets get '
            .. 'a call each', where, describe_error(err))
        s.fallback_logged_at = now
    end
end

-- The reply of the batch entry, {applied, refused}, whether the server sent
-- it as it is or wrapped in one array (a C function's results on 2.x); nil if
-- it is neither.
local function batch_reply(value)
    if type(value) ~= 'table' then
        return nil
    end
    if value.refused == nil and type(value[1]) == 'table' then
        value = value[1]
    end
    if type(value.refused) ~= 'table' then
        return nil
    end
    return value
end

-- Marks the groups of a batch by its outcome: each applied, or refused (by
-- bucket, in the reply; every one when nothing ran) and put in `retry`, or
-- failed (an error after which the batch may or may not have been applied: it
-- is sent again in a later round, after the back-off).
local function settle(batch, value, err, where, retry)
    local reply = err == nil and batch_reply(value) or nil
    if reply ~= nil then
        local refused = {}
        for _, b in ipairs(reply.refused) do
            refused[b] = true
        end
        for _, g in ipairs(batch.groups) do
            if refused[g.bucket] then
                table.insert(retry, g)
            else
                g.ok = true
            end
        end
        return
    end
    if err == nil then
        err = string.format('unexpected reply of %s: %s', M.APPLY_MANY_FUNCTION,
            require('json').encode(value))
    end
    if type(err) ~= 'string' and err.type ~= 'ShardingError' and BATCH_NOT_RUN[err.code] then
        fell_back(where, err)
        for _, g in ipairs(batch.groups) do
            table.insert(retry, g)
        end
        return
    end
    failed(where, err)
end

-- The arguments of the batch entry: {{bucket, events}, ...}.
local function batch_args(batch)
    local groups = {}
    for i, g in ipairs(batch.groups) do
        groups[i] = {g.bucket, g.events}
    end
    return {groups}
end

-- Sends `groups` ({bucket, events, ok}) and sets each group's `ok`: those of
-- buckets this storage holds writable (each held with a write reference
-- meanwhile) applied here in one transaction, and those of each other replica
-- set in one call to its master, at most MAX_IN_FLIGHT at once; then each group
-- a batch refused on its own (send_one).
local function send(groups)
    local r, err = router()
    if r == nil then
        failed('no router', err)
        return
    end
    local vstorage = require('vshard').storage
    local this = vstorage.internal.this_replicaset
    local this_id = this ~= nil and this.id or nil
    local here = {groups = {}}
    local batches, by_replicaset, retry = {}, {}, {}
    for _, g in ipairs(groups) do
        if vstorage.bucket_refrw(g.bucket) then
            table.insert(here.groups, g)
        else
            local ok, replicaset = pcall(r.route, r, g.bucket)
            if not ok or replicaset == nil or (this_id ~= nil and replicaset.id == this_id) then
                -- Unknown to the router, or this replica set but not writable
                -- here: a moving bucket, which vshard's routing follows.
                table.insert(retry, g)
            else
                local batch = by_replicaset[replicaset]
                if batch == nil then
                    batch = {replicaset = replicaset, groups = {}}
                    by_replicaset[replicaset] = batch
                    table.insert(batches, batch)
                end
                table.insert(batch.groups, g)
            end
        end
    end
    if #here.groups > 0 then
        table.insert(batches, here)
    end
    each_in_flight(batches, function(batch)
        local s = shared()
        if batch == here then
            s.local_batches = s.local_batches + 1
            local f = box.func[M.APPLY_MANY_FUNCTION]
            local ok, value
            if f == nil then
                ok, value = false,
                    box.error.new(box.error.NO_SUCH_FUNCTION, M.APPLY_MANY_FUNCTION)
            else
                ok, value = pcall(f.call, f, batch_args(here))
            end
            for _, g in ipairs(here.groups) do
                vstorage.bucket_unrefrw(g.bucket)
            end
            settle(here, ok and value or nil, (not ok) and value or nil,
                'delivery to this replica set', retry)
            return
        end
        local rs = batch.replicaset
        local where = string.format('delivery to replica set %s', tostring(rs.id))
        local down = master_down(rs)
        if down ~= nil then
            failed(where, down)
            return
        end
        s.batch_calls = s.batch_calls + 1
        local value, e = rs:callrw(M.APPLY_MANY_FUNCTION, batch_args(batch),
            {timeout = M.CALL_TIMEOUT_S})
        settle(batch, value, e, where, retry)
    end)
    each_in_flight(retry, function(g)
        send_one(r, g)
    end)
end

-- Marks a destination bucket after its call: a success clears its back-off, a
-- failure doubles it.
local function note(g, now)
    if g.ok then
        backoff[g.bucket] = nil
        return
    end
    local t = backoff[g.bucket]
    local delay = t and math.min(t.delay * 2, M.BACKOFF_MAX_S) or M.BACKOFF_MIN_S
    backoff[g.bucket] = {until_s = now + delay, delay = delay}
end

-- One round: returns how many rows it took (0: nothing to do now) and the
-- seconds to wait before the next one when some delivery failed.
local function round(refs)
    local space = box.space[SPACE]
    local count = bucket.stored_count()
    local rows, orphans = take(space, refs, count)
    if #orphans > 0 then
        log.error('dialogs: outbox: %d rows name a message this storage does not hold '
            .. '(first %s): deleted', #orphans, tostring(orphans[1]))
        box.begin()
        for _, id in ipairs(orphans) do
            space:delete{id}
        end
        box.commit()
    end
    if #rows == 0 then
        return 0
    end
    local ok, err = barrier(space, rows[#rows].id)
    if not ok then
        if err ~= nil then
            failed('the durability barrier', err)
            return #rows, M.BACKOFF_MIN_S
        end
        -- The newest row is gone (rolled back): take the round again.
        return #rows
    end
    -- Rows rolled back before the barrier are not there any more.
    local groups, by_bucket = {}, {}
    local now = fiber.clock()
    local live = {}
    for _, row in ipairs(rows) do
        if space:get{row.id} ~= nil then
            table.insert(live, row)
            for _, e in ipairs(row.events) do
                local b = e[1]
                if not blocked(b, now) then
                    local g = by_bucket[b]
                    if g == nil then
                        g = {bucket = b, events = {}, ok = false}
                        by_bucket[b] = g
                        table.insert(groups, g)
                    end
                    table.insert(g.events, e[2])
                end
            end
        end
    end
    send(groups)
    now = fiber.clock()
    local wait = nil
    for _, g in ipairs(groups) do
        note(g, now)
        if not g.ok then
            wait = math.min(wait or M.BACKOFF_MAX_S, backoff[g.bucket].delay)
        end
    end
    -- A row is done when every one of its events reached its bucket.
    local done = {}
    for _, row in ipairs(live) do
        local all = true
        for _, e in ipairs(row.events) do
            local g = by_bucket[e[1]]
            all = all and g ~= nil and g.ok
        end
        if all then
            table.insert(done, row)
        end
    end
    if #done > 0 then
        -- Counted once applied where they go (a reader of info() that sees the
        -- rows gone sees them counted).
        local s = shared()
        s.delivered = s.delivered + #done
        for _, row in ipairs(done) do
            s.events = s.events + #row.events
        end
        box.begin()
        for _, row in ipairs(done) do
            space:delete{row.id}
        end
        box.commit()
    end
    shared().rounds = shared().rounds + 1
    return #rows, wait
end

local function release(refs)
    local vstorage = require('vshard').storage
    for b, held in pairs(refs) do
        if held then
            vstorage.bucket_unrefrw(b)
        end
    end
end

-- How long to wait with nothing to send: until the first destination's
-- back-off ends (its rows are due then), else POLL_S or IDLE_WAKE_S.
local function idle_wait()
    local wait = M.POLL_S or M.IDLE_WAKE_S
    local now = fiber.clock()
    for b, t in pairs(backoff) do
        if t.until_s <= now - M.BACKOFF_MAX_S then
            backoff[b] = nil
        elseif t.until_s > now then
            wait = math.min(wait, t.until_s - now)
        end
    end
    return wait
end

-- Whether this instance should drain now: its replica set's master (writable),
-- the outbox there, the inboxes built.
local function may_drain()
    return not box.info.ro and watch() and inbox_built()
end

-- The fiber's body: rounds while there is work, a wait on the trigger's
-- condition otherwise, a back-off after a failure. Runs until cancelled.
local function drain()
    local s = shared()
    while true do
        fiber.testcancel()
        if not may_drain() then
            s.draining = false
            s.cond:wait(M.IDLE_WAKE_S)
        else
            s.draining = true
            s.dirty = false
            local refs = {}
            local ok, taken, wait = pcall(round, refs)
            release(refs)
            fiber.testcancel()
            if not ok then
                failed('a round', taken)
                fiber.sleep(M.BACKOFF_MIN_S)
                s.dirty = true
            elseif wait ~= nil then
                s.cond:wait(wait)
            elseif taken == 0 and not s.dirty then
                s.cond:wait(idle_wait())
            end
        end
    end
end

-- Starts the drainer (replacing a running one): on every storage instance; it
-- works only while the instance is writable.
function M.start()
    watch()
    background.start(FIBER, drain)
end

-- Stops it and removes the trigger; rows stay for the next start.
function M.stop()
    background.stop(FIBER)
    unwatch()
    shared().draining = false
end

-- Wakes the drainer (tests, and a console after a change).
function M.wakeup()
    signal()
end

return M

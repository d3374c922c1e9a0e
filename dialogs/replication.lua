-- dialogs.replication: a replica set of dialogs instances. Takes the replication
-- settings of dialogs.config ({peers, read_only, user, password, sync_quorum,
-- sync_timeout, connect_timeout}); everything is off unless set, so a standalone
-- instance behaves as one.

local clock = require('clock')
local fiber = require('fiber')
local log = require('log')

local background = require('dialogs.background')
local capabilities = require('dialogs.capabilities')

local M = {}

-- The spaces whose writes wait for the quorum when a synchronous quorum is set:
-- the messages and their request ids, and the inbox (a mark_read, which writes
-- only there, is acknowledged once a quorum has it, as a message is).
M.SYNC_SPACES = {'dialogs', 'dialogs_requests', 'dialogs_inbox', 'dialogs_inbox_totals',
                 'dialogs_outbox'}

-- The box.cfg options of replication, added to `opts` (returned).
--
-- A writable instance (the master) starts at once with whichever peers answer
-- (connect quorum 0), so a replica being down never keeps it from taking writes.
-- A replica needs one peer: on its first start it waits up to the connect
-- timeout for a master to join (Tarantool exits if none answers); on a restart
-- it serves its local copy after that wait and catches up in the background.
function M.box_options(r, opts)
    opts.read_only = r.read_only
    if #r.peers > 0 then
        local uris = {}
        for i, peer in ipairs(r.peers) do
            uris[i] = string.format('%s:%s@%s', r.user, r.password, peer)
        end
        opts.replication = uris
        opts.replication_connect_quorum = r.read_only and 1 or 0
        opts.replication_connect_timeout = r.connect_timeout
        opts.replication_sync_timeout = r.connect_timeout
    end
    if r.sync_quorum ~= nil then
        opts.replication_synchro_quorum = r.sync_quorum
        opts.replication_synchro_timeout = r.sync_timeout
    end
    return opts
end

local function set_space_sync(space, on)
    if capabilities.supports_space_alter() then
        space:alter({is_sync = on})
        return
    end
    local flags = setmetatable({}, {__serialize = 'map'})
    for k, v in pairs(box.space._space:get(space.id)[6] or {}) do
        flags[k] = v
    end
    flags.is_sync = on
    box.space._space:update(space.id, {{'=', 6, flags}})
end

-- Makes the message spaces synchronous exactly when a quorum is set. is_sync is
-- stored in the schema and replicated, so the writable instance's settings
-- decide for the whole replica set, on every start: setting the quorum turns it
-- on, unsetting it turns it off again (back to asynchronous, and the queue is
-- given up). Writable instance only, as admin.
function M.apply_sync_mode(r)
    local on = r.sync_quorum ~= nil
    for _, name in ipairs(M.SYNC_SPACES) do
        local space = box.space[name]
        if (space.is_sync or false) ~= on then
            set_space_sync(space, on)
            log.info('dialogs: space %s is now %s', name, on and 'synchronous' or 'asynchronous')
        end
    end
    if not on then
        M.release_queue()
    end
end

-- How often the queue taker looks at its peers while too few are connected, and
-- how long it waits after a failed box.ctl.promote(), seconds.
local PEER_POLL_S = 0.1
local PROMOTE_RETRY_S = 1
-- Failed attempts between two warnings in the log.
local PROMOTE_WARN_EVERY = 10

local function queue_owner()
    return box.info.synchro.queue.owner
end

-- This instance owns the queue and may write: after a restart it still owns it
-- in the data, but the server (3.x) wants a new promote before it writes again.
local function queue_is_mine()
    return queue_owner() == box.info.id and not box.info.ro
end

-- How many instances, this one included, must vote for a promote.
local function election_quorum()
    local ok, q = pcall(function() return box.info.synchro.quorum end)
    return ok and type(q) == 'number' and q or 1
end

-- Peers this instance both follows and feeds: the ones whose votes can reach it.
local function connected_peers()
    local n = 0
    for id, peer in pairs(box.info.replication) do
        if id ~= box.info.id and peer.upstream ~= nil and peer.upstream.status == 'follow'
                and peer.downstream ~= nil and peer.downstream.status == 'follow' then
            n = n + 1
        end
    end
    return n
end

-- The fiber that takes the synchronous queue: waits until enough peers are
-- connected for a quorum of votes, then box.ctl.promote(), retried until the
-- queue is this instance's; then on_taken(). Stops when another instance takes
-- it, or when the instance is configured read-only (scripts/promote --demote).
local function take_queue_loop(on_taken)
    local attempts = 0
    while not box.cfg.read_only and not queue_is_mine() do
        local owner = queue_owner()
        if owner ~= 0 and owner ~= box.info.id then
            log.warn('dialogs: instance %d took the synchronous queue: not taking it', owner)
            return
        end
        if connected_peers() + 1 < election_quorum() then
            fiber.sleep(PEER_POLL_S)
        else
            attempts = attempts + 1
            local ok, err = pcall(box.ctl.promote)
            if not ok and attempts % PROMOTE_WARN_EVERY == 1 then
                log.warn('dialogs: box.ctl.promote() failed (%s); retrying', tostring(err))
            end
            if not queue_is_mine() then
                fiber.sleep(PROMOTE_RETRY_S)
            end
        end
    end
    if queue_is_mine() then
        log.info('dialogs: this instance owns the synchronous queue')
        if on_taken ~= nil then
            local ok, err = pcall(on_taken)
            if not ok then
                log.error('dialogs: after taking the synchronous queue: %s', tostring(err))
            end
        end
    end
end

-- On a server where the synchronous queue has an owner (2.10+: box.ctl.promote
-- and box.info.synchro.queue exist), the instance configured writable takes it:
-- when a quorum is set and nobody owns the queue yet, and after every restart of
-- the instance that owned it (Tarantool 3 then wants a new promote before the
-- owner writes anything, synchronous or not). It takes it with
-- box.ctl.promote(), which needs the votes of a quorum: waits up to
-- r.connect_timeout seconds (none if nil) for enough peers, and otherwise goes on
-- in a background fiber (logged)
-- that takes the queue once they have joined and then calls on_taken() (e.g. the
-- set-up that a read-only instance skipped). A queue that another instance owns
-- is never taken here: that is scripts/promote's job. Replicas, asynchronous
-- sets nobody owns, and 2.6 do nothing. Returns true when the queue is this
-- instance's and it may write.
function M.take_queue(r, on_taken)
    if r.read_only or not capabilities.synchro_queue_needs_owner() then
        return false
    end
    local owner = queue_owner()
    if owner ~= 0 and owner ~= box.info.id then
        log.warn('dialogs: the synchronous queue belongs to instance %d: this instance takes '
            .. 'no write until it is promoted (scripts/promote)', owner)
        return false
    end
    if owner == 0 and r.sync_quorum == nil then
        return false
    end
    if queue_is_mine() then
        return true
    end
    background.start('queue', take_queue_loop, on_taken)
    local deadline = clock.monotonic() + (r.connect_timeout or 0)
    while not queue_is_mine() and clock.monotonic() < deadline
            and background.get('queue') ~= nil do
        fiber.sleep(PEER_POLL_S)
    end
    if not queue_is_mine() then
        log.warn('dialogs: the synchronous queue %s and %d of the %d instances of the quorum '
            .. 'are connected: new_dialog is refused until enough peers join, then this '
            .. 'instance takes the queue', owner == 0 and 'has no owner'
            or 'is this instance\'s from before the restart (it must be taken again)',
            connected_peers() + 1, election_quorum())
    end
    return queue_is_mine()
end

-- Stops a queue taker that take_queue started, if one still runs.
function M.stop_take_queue()
    background.stop('queue')
end

-- An asynchronous replica set needs no owner of the queue; one left from when
-- the set was synchronous would make every restart of the master wait for a
-- quorum of votes. The writable instance gives it up (box.ctl.demote), logged.
function M.release_queue()
    if not capabilities.synchro_queue_needs_owner() or box.ctl.demote == nil
            or not queue_is_mine() then
        return
    end
    box.ctl.demote()
    log.info('dialogs: asynchronous: this instance gave up the synchronous queue')
end

-- One line for the log: the role and the mode.
function M.describe(r)
    if #r.peers == 0 and not r.sync_quorum then
        return 'standalone'
    end
    return string.format('%s, peers %s, %s', r.read_only and 'read-only replica' or 'writable',
        table.concat(r.peers, ','),
        r.sync_quorum and ('synchronous, quorum ' .. r.sync_quorum) or 'asynchronous')
end

return M

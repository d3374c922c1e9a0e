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

-- The spaces whose writes wait for the quorum when a synchronous quorum is set.
M.SYNC_SPACES = {'dialogs', 'dialogs_requests'}

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
-- on, unsetting it turns it off again (back to asynchronous). Writable instance
-- only, as admin.
function M.apply_sync_mode(r)
    local on = r.sync_quorum ~= nil
    for _, name in ipairs(M.SYNC_SPACES) do
        local space = box.space[name]
        if (space.is_sync or false) ~= on then
            set_space_sync(space, on)
            log.info('dialogs: space %s is now %s', name, on and 'synchronous' or 'asynchronous')
        end
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
-- connected for a quorum, then box.ctl.promote(), retried until this instance
-- owns the queue. Stops when someone else takes it, or when the instance is
-- configured read-only (scripts/promote --demote).
local function take_queue_loop(quorum)
    local attempts = 0
    while queue_owner() == 0 and not box.cfg.read_only do
        if connected_peers() + 1 < quorum then
            fiber.sleep(PEER_POLL_S)
        else
            attempts = attempts + 1
            local ok, err = pcall(box.ctl.promote)
            if ok and queue_owner() == box.info.id then
                break
            end
            if attempts % PROMOTE_WARN_EVERY == 1 then
                log.warn('dialogs: box.ctl.promote() failed (%s); retrying', tostring(err))
            end
            fiber.sleep(PROMOTE_RETRY_S)
        end
    end
    if queue_owner() == box.info.id then
        log.info('dialogs: this instance owns the synchronous queue')
    end
end

-- On a server where synchronous writes need an owner of the queue (2.10+), the
-- writable instance of a synchronous replica set (a quorum set, read_only not)
-- takes it: at once if nobody owns it and the quorum is connected, else in a
-- background fiber as soon as enough peers are (logged). A queue that another
-- instance owns is never taken here: that is scripts/promote's job. Replicas and
-- asynchronous sets do nothing. Returns true when the queue is this instance's
-- or about to be (the quorum is connected): then wait_queue is worth a wait.
function M.take_queue(r)
    if r.sync_quorum == nil or r.read_only or not capabilities.synchro_queue_needs_owner() then
        return false
    end
    local owner = queue_owner()
    if owner == box.info.id then
        return true
    end
    if owner ~= 0 then
        log.warn('dialogs: the synchronous queue belongs to instance %d: this instance takes '
            .. 'no synchronous write until it is promoted (scripts/promote)', owner)
        return false
    end
    background.start('queue', take_queue_loop, r.sync_quorum)
    local connected = connected_peers() + 1
    if connected < r.sync_quorum then
        log.warn('dialogs: the synchronous queue has no owner and %d of the %d instances of '
            .. 'the quorum are connected: new_dialog is refused until enough peers join, '
            .. 'then this instance takes the queue', connected, r.sync_quorum)
        return false
    end
    return true
end

-- Stops a queue taker that take_queue started, if one still runs.
function M.stop_take_queue()
    background.stop('queue')
end

-- Waits up to `timeout` seconds for this instance to own the queue; true if it does.
function M.wait_queue(timeout)
    local deadline = clock.monotonic() + timeout
    while queue_owner() ~= box.info.id and clock.monotonic() < deadline do
        fiber.sleep(PEER_POLL_S)
    end
    return queue_owner() == box.info.id
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

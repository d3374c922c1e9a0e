-- dialogs.replication: a replica set of dialogs instances. Takes the replication
-- settings of dialogs.config ({peers, read_only, user, password, sync_quorum,
-- sync_timeout, connect_timeout}); everything is off unless set, so a standalone
-- instance behaves as one.

local log = require('log')

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

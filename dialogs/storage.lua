-- dialogs.storage: this instance as a vshard storage of a sharded store.
--
-- A storage is a replica set of the ordinary store (master + replicas, the same
-- schema, the same native procedures), plus vshard's own: the _bucket space, the
-- bucket refs that keep a bucket in place while a call uses it, the rebalancer.
-- Clients never call a storage: routers do, as the replication user, through
-- vshard.storage.call, which takes the bucket's ref and then calls one of the
-- functions below (README, "Sharding by dialog_id with vshard").
--
-- Those functions wrap the native procedures for the trip back through vshard,
-- which keeps only one value of a call and turns a raised error into 32
-- (PROC_LUA): each returns one value (the id, or the page as one array), and a
-- procedure's error as a second value {type = 'dialogs', code, message}, which
-- the router raises again unchanged.

local log = require('log')

local sharding = require('dialogs.sharding')

local M = {}

-- The settings start() ran with (reconfigure() changes their topology).
local settings = nil

-- The name routers call, per procedure.
M.FUNCTIONS = {
    new_dialog = 'dialogs_storage.new_dialog',
    get_dialog = 'dialogs_storage.get_dialog',
}

local function failure(e)
    if type(e) ~= 'cdata' then
        e = {code = box.error.PROC_LUA, message = tostring(e)}
    end
    return nil, {type = 'dialogs', code = e.code, message = e.message}
end

local function one_value(ok, ...)
    if not ok then
        return failure((...))
    end
    return ...
end

-- get_dialog's messages as one array: a server that sends a C procedure's
-- results one value each gets the page from the procedure as one array already;
-- elsewhere each message is a value of its own (a tuple).
local function one_page(ok, first, ...)
    if not ok then
        return failure(first)
    end
    if type(first) == 'table' and select('#', ...) == 0 then
        return first
    end
    return {first, ...}
end

-- Called by routers (through vshard.storage.call) with a client's arguments,
-- which the router has already validated.
local api = {}

function api.new_dialog(...)
    local f = box.func.new_dialog
    return one_value(pcall(f.call, f, {...}))
end

function api.get_dialog(...)
    local f = box.func.get_dialog
    return one_page(pcall(f.call, f, {...}))
end

-- vshard's configuration of this storage from the settings of dialogs.config.
function M.vshard_cfg(s, topology)
    local r = s.replication
    return sharding.vshard_cfg(topology or s.sharding.replicasets, r.user, r.password,
        s.bucket_count, {rebalancer_max_sending = s.sharding.rebalancer_max_sending})
end

-- The identity box.cfg gives this instance (before its first start, and the
-- same on every start after): {instance_uuid, replicaset_uuid}.
function M.box_identity(s)
    local rs = s.sharding.replicaset
    return {
        instance_uuid = sharding.instance_uuid(rs.name, s.listen),
        replicaset_uuid = sharding.replicaset_uuid(rs.name),
    }
end

-- Starts vshard's storage on a configured box, as admin, after the store's own
-- set-up (schema, procedures, the replication user vshard also logs in as).
function M.start(s)
    settings = s
    rawset(_G, 'dialogs_storage', api)
    local vshard = require('vshard')
    -- vshard's functions in _func are named vshard.storage.*: it must be global.
    rawset(_G, 'vshard', vshard)
    vshard.storage.cfg(M.vshard_cfg(s), M.box_identity(s).instance_uuid)
    log.info('dialogs: vshard storage of replica set %s (%d buckets), cluster %s',
        s.sharding.replicaset.name, s.bucket_count, sharding.describe(s.sharding.replicasets))
end

-- A new topology for a running storage (a replica set added or removed), given
-- in DIALOGS_SHARDING's form; run as admin on every storage and router (README,
-- "Adding a replica set"): require('dialogs.storage').reconfigure('s1=...;s2=...').
-- vshard's rebalancer then moves the buckets.
function M.reconfigure(topology)
    local s = assert(settings, 'dialogs: this instance is not a started storage')
    local replicasets = sharding.parse_topology(topology, function(fmt, ...)
        error(string.format('dialogs: topology: ' .. fmt, ...), 0)
    end, function(address)
        return address
    end)
    local rs = sharding.find_member(replicasets, s.listen)
    if rs == nil or rs.name ~= s.sharding.replicaset.name then
        error(string.format('dialogs: topology: this storage (%s) must stay in replica set %s',
            s.listen, s.sharding.replicaset.name), 0)
    end
    require('vshard').storage.cfg(M.vshard_cfg(s, replicasets), M.box_identity(s).instance_uuid)
    s.sharding.replicasets = replicasets
    log.info('dialogs: storage reconfigured: cluster %s', sharding.describe(replicasets))
end

return M

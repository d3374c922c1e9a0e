-- dialogs.sharding, dialogs.bucket and the sharding settings of dialogs.config:
-- the topology, the derived uuids (the same as Python's uuid.uuid5), vshard's
-- configuration, the bucket function, and the refusals naming the variable.

local fio = require('fio')

local bucket = require('dialogs.bucket')
local check = require('check')
local config = require('dialogs.config')
local sharding = require('dialogs.sharding')

-- fn(base, lib) over a directory holding a built-looking module.
local function with_lib(fn)
    local base = fio.tempdir()
    local lib = fio.pathjoin(base, 'target', 'dialogs')
    fio.mktree(lib)
    local names = {'dialogs_route'}
    for _, p in ipairs(config.library_names()) do
        table.insert(names, p)
    end
    for _, p in ipairs(names) do
        local f = fio.open(fio.pathjoin(lib, p .. '.so'), {'O_CREAT', 'O_WRONLY'},
            tonumber('644', 8))
        f:close()
    end
    local ok, res = pcall(fn, base, lib)
    fio.rmtree(base)
    if not ok then
        error(res, 0)
    end
    return res
end

-- config.from_env(env) over a directory holding a built-looking module.
local function from_env(env)
    local ok, res = pcall(with_lib, function(base)
        return config.from_env(env, base)
    end)
    if not ok then
        error(res, 0)
    end
    return res
end

local TOPOLOGY = 's1=127.0.0.1:3311,127.0.0.1:3312;s2=127.0.0.1:3321'

local function env(extra)
    local t = {DIALOGS_SHARDING = TOPOLOGY, DIALOGS_REPLICATION_PASSWORD = 'pw',
        DIALOGS_LISTEN = '127.0.0.1:3312'}
    for k, v in pairs(extra or {}) do
        t[k] = v
    end
    return t
end

local function refuses(e, message)
    local ok, err = pcall(from_env, e)
    check.equal(ok, false, 'accepted')
    check.equal(tostring(err), message, 'refusal')
end

return {
    {'uuids are UUIDv5 of the names (as Python computes them)', function()
        check.equal(sharding.replicaset_uuid('s1'), '0b954fd6-710e-51e3-a208-fe1d95a5e991',
            'replica set s1')
        check.equal(sharding.instance_uuid('s1', '127.0.0.1:3311'),
            'bdb526a2-5db4-513a-ac5d-7b80bba8a93d', 'instance s1/127.0.0.1:3311')
    end},
    {'a topology parses in order and is written back the same', function()
        local fail = function(fmt, ...) error(string.format(fmt, ...), 0) end
        local rs = sharding.parse_topology(TOPOLOGY, fail, function(a) return a end)
        check.equal(rs, {{name = 's1', members = {'127.0.0.1:3311', '127.0.0.1:3312'}},
            {name = 's2', members = {'127.0.0.1:3321'}}}, 'replica sets')
        check.equal(sharding.describe(rs), TOPOLOGY, 'described')
        local found, member = sharding.find_member(rs, '127.0.0.1:3321')
        check.equal({found.name, member}, {'s2', '127.0.0.1:3321'}, 'member')
        check.equal(sharding.find_member(rs, '127.0.0.1:9999'), nil, 'no member')
    end},
    {'vshard configuration: uuids, credentials in the uris, master auto', function()
        local fail = function(fmt, ...) error(string.format(fmt, ...), 0) end
        local rs = sharding.parse_topology(TOPOLOGY, fail, function(a) return a end)
        local cfg = sharding.vshard_cfg(rs, 'replicator', 'pw', 300,
            {rebalancer_max_sending = 4})
        check.equal(cfg.bucket_count, 300, 'bucket_count')
        check.equal(cfg.box_cfg_mode, 'manual', 'box_cfg_mode')
        check.equal(cfg.rebalancer_max_sending, 4, 'option')
        local s1 = cfg.sharding[sharding.replicaset_uuid('s1')]
        check.equal(s1.master, 'auto', 'master')
        check.equal(s1.replicas[sharding.instance_uuid('s1', '127.0.0.1:3312')],
            {uri = 'replicator:pw@127.0.0.1:3312', name = 's1/127.0.0.1:3312'}, 'replica')
    end},
    {'a storage replicates with its replica set; a router with nobody', function()
        local s = from_env(env({DIALOGS_READ_ONLY = 'true'}))
        check.equal(s.sharding.router, false, 'router')
        check.equal(s.sharding.replicaset.name, 's1', 'replica set')
        check.equal(s.replication.peers, {'127.0.0.1:3311', '127.0.0.1:3312'}, 'peers')
        check.equal(s.replication.read_only, true, 'read_only')
        check.equal(s.sharding.call_timeout, 2, 'call_timeout')
        check.equal(s.sharding.rebalancer_max_sending, 1, 'rebalancer_max_sending')
        check.equal(s.bucket_count, 3000, 'bucket_count')
        local r = from_env(env({DIALOGS_LISTEN = '127.0.0.1:3301', DIALOGS_ROUTER = 'true',
            DIALOGS_BUCKET_COUNT = '300'}))
        check.equal(r.sharding.router, true, 'router')
        check.equal(r.replication.peers, {}, 'router peers')
        check.equal(r.bucket_count, 300, 'router bucket_count')
        check.equal(from_env({}).sharding, nil, 'not sharded')
        check.equal(from_env(env({DIALOGS_LISTEN = '127.0.0.1:3301', DIALOGS_ROUTER = 'true',
            DIALOGS_GUEST = 'execute'})).guest, 'execute', 'a router takes guest by choice')
    end},
    {'the router role takes guest by choice, named roles_cfg.dialogs.router.guest', function()
        local router = require('dialogs.router')
        with_lib(function(_, lib)
            router.validate({lib_dir = lib})
            router.validate({lib_dir = lib, guest = 'none'})
            router.validate({lib_dir = lib, guest = 'execute'})
            check.raises('dialogs: roles_cfg.dialogs.router.guest: expected one of none, '
                .. 'execute, got "yes"', router.validate, {lib_dir = lib, guest = 'yes'})
        end)
    end},
    {'sharding settings are refused with the variable named', function()
        refuses(env({DIALOGS_LISTEN = '127.0.0.1:3399'}), 'dialogs: DIALOGS_LISTEN: '
            .. '127.0.0.1:3399 is no member of a replica set of DIALOGS_SHARDING ('
            .. TOPOLOGY .. '); a storage listens on its own address as listed there')
        refuses(env({DIALOGS_REPLICATION = '127.0.0.1:3311'}), 'dialogs: DIALOGS_REPLICATION: '
            .. 'must be unset when DIALOGS_SHARDING is set: a storage replicates with the '
            .. 'members of its replica set there, a router with nobody')
        refuses(env({DIALOGS_REPLICATION_PASSWORD = ''}), 'dialogs: '
            .. 'DIALOGS_REPLICATION_PASSWORD: must be set when DIALOGS_SHARDING is set '
            .. '(routers and storages log in to the storages with it)')
        refuses(env({DIALOGS_GUEST = 'execute'}), 'dialogs: DIALOGS_GUEST: a storage takes '
            .. 'calls from routers only: set it on the routers, which clients call')
        refuses({DIALOGS_ROUTER = 'true'}, 'dialogs: DIALOGS_ROUTER: a router needs the '
            .. 'storages: set DIALOGS_SHARDING')
        refuses(env({DIALOGS_SHARDING = 's1=127.0.0.1:3312;s1=127.0.0.1:3313'}),
            'dialogs: DIALOGS_SHARDING: replica set "s1" is listed twice')
        refuses(env({DIALOGS_SHARDING = 's1=127.0.0.1:3312,127.0.0.1:3312'}),
            'dialogs: DIALOGS_SHARDING: 127.0.0.1:3312 is listed twice')
        refuses(env({DIALOGS_SHARDING = 's1=u:p@127.0.0.1:3312'}), 'dialogs: '
            .. 'DIALOGS_SHARDING: replica set "s1": member "...@127.0.0.1:3312" carries '
            .. 'credentials; the replication user and password are set apart')
        refuses(env({DIALOGS_SHARDING = '127.0.0.1:3312'}), 'dialogs: DIALOGS_SHARDING: '
            .. 'expected NAME=HOST:PORT,HOST:PORT for each replica set, got "127.0.0.1:3312"')
        refuses(env({DIALOGS_BUCKET_COUNT = '0'}), 'dialogs: DIALOGS_BUCKET_COUNT: '
            .. 'expected a whole number 1..1000000, got "0"')
        refuses(env({DIALOGS_REBALANCER_MAX_SENDING = '16'}), 'dialogs: '
            .. 'DIALOGS_REBALANCER_MAX_SENDING: expected a whole number 1..15, got "16"')
    end},
    {'the bucket of a dialog, from a uuid string', function()
        check.equal(bucket.of('0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01', 3000), 1087, 'v4')
        check.equal(bucket.of('ffffffff-ffff-ffff-ffff-ffffffffffff', 3000), 1, 'all ones')
        check.equal(bucket.of('80000000-0000-0000-0000-000000000000', 3000), 2649, 'sign bit')
    end},
}

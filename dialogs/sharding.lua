-- dialogs.sharding: the cluster of a sharded store, as vshard sees it.
--
-- Pure functions (nothing here touches box) and nothing runs at load time.
--
-- A topology lists the storage replica sets, each a name and its members'
-- addresses (the master is whichever member is writable: vshard finds it, so a
-- failover needs no change here):
--
--   s1=127.0.0.1:3311,127.0.0.1:3312;s2=127.0.0.1:3321,127.0.0.1:3322
--
-- vshard (on 2.x) names replica sets and instances by uuid. Ours are derived
-- from the names, so that every router and storage computes the same ones from
-- the same topology: a replica set is UUIDv5(NAMESPACE, 'replicaset:' .. name),
-- an instance UUIDv5(NAMESPACE, 'instance:' .. name .. '/' .. address). An
-- instance's address is therefore part of its identity, for the life of its
-- data directory.

local fio = require('fio')

local ids = require('dialogs.ids')

local M = {}

-- The namespace of the derived uuids (docs/operations.md, "Sharding settings").
M.NAMESPACE = '79666864-243c-4ee5-9b00-0d947a8f563f'

-- Seconds a router waits for one call before it answers with an error
-- (retries of a bucket in transit included).
M.DEFAULT_CALL_TIMEOUT_S = 2
-- Buckets a storage sends at once while rebalancing (vshard's default and limit).
M.DEFAULT_REBALANCER_MAX_SENDING = 1
M.MAX_REBALANCER_MAX_SENDING = 15

function M.replicaset_uuid(name)
    return ids.v5(M.NAMESPACE, 'replicaset:' .. name):str()
end

function M.instance_uuid(replicaset, address)
    return ids.v5(M.NAMESPACE, 'instance:' .. replicaset .. '/' .. address):str()
end

-- `fail(fmt, ...)` raises an error about the setting being parsed;
-- `parse_address(item)` validates one member's address.
--
-- Returns {{name = 's1', members = {'127.0.0.1:3311', ...}}, ...} in the given
-- order. Names are letters, digits, '_' and '-'; an address appears once.
function M.parse_topology(value, fail, parse_address)
    if type(value) ~= 'string' then
        fail('expected NAME=HOST:PORT,HOST:PORT;NAME=..., got %s', tostring(value))
    end
    local replicasets, names, seen = {}, {}, {}
    for item in (value .. ';'):gmatch('([^;]*);') do
        item = item:match('^%s*(.-)%s*$')
        if item ~= '' then
            local name, members = item:match('^([%w_%-]+)%s*=%s*(.*)$')
            if name == nil then
                fail('expected NAME=HOST:PORT,HOST:PORT for each replica set, got %q', item)
            end
            if names[name] then
                fail('replica set %q is listed twice', name)
            end
            names[name] = true
            local rs = {name = name, members = {}}
            for member in (members .. ','):gmatch('([^,]*),') do
                member = member:match('^%s*(.-)%s*$')
                if member == '' then
                    fail('replica set %q: empty member address in %q', name, members)
                end
                if member:find('@', 1, true) then
                    fail('replica set %q: member %q carries credentials; the replication '
                        .. 'user and password are set apart', name, (member:gsub('^.*@', '...@')))
                end
                member = parse_address(member)
                if seen[member] then
                    fail('%s is listed twice', member)
                end
                seen[member] = true
                table.insert(rs.members, member)
            end
            table.insert(replicasets, rs)
        end
    end
    if #replicasets == 0 then
        fail('no replica set in %q', value)
    end
    return replicasets
end

-- How to get vshard, for the message of an instance that cannot find it.
M.INSTALL_HINT = 'install it with `tt rocks install vshard` (or `luarocks install vshard`), '
    .. 'or set VSHARD_DIR to a checkout of github.com/tarantool/vshard'

-- Puts `dir` (VSHARD_DIR: a directory holding vshard/init.lua) first on the Lua
-- path when given, and loads vshard; an error saying how to install it when it
-- is nowhere. `setting` names what asked for it.
function M.load_vshard(dir, setting)
    if dir ~= nil and dir ~= '' then
        package.path = dir .. '/?.lua;' .. dir .. '/?/init.lua;' .. package.path
    end
    local ok, vshard = pcall(require, 'vshard')
    if not ok then
        error(string.format('dialogs: %s is set, but the vshard module cannot be loaded '
            .. '(%s): %s', setting, tostring(vshard):match('^[^\n]*'), M.INSTALL_HINT), 0)
    end
    return vshard
end

-- Tarantool 3 roles (dialogs.storage, dialogs.router): their roles_cfg map
-- `cfg` (nil: every default), checked to hold only `keys`, as a settings source
-- whose messages name roles_cfg.<role>.<key>; `lib_dir` resolved as the
-- dialogs role resolves it (the checkout's target/dialogs, else package.cpath).
-- Returns {src, lib_dir}.
function M.role_settings(role, cfg, keys)
    local config = require('dialogs.config')
    local name = function(key)
        return 'roles_cfg.' .. role .. '.' .. key
    end
    if cfg == nil then
        cfg = {}
    end
    if type(cfg) ~= 'table' then
        config.error('roles_cfg.' .. role, 'expected a map of settings (%s), got %s',
            table.concat(keys, ', '), type(cfg))
    end
    for key in pairs(cfg) do
        local known = false
        for _, k in ipairs(keys) do
            known = known or k == key
        end
        if not known then
            config.error(name(tostring(key)), 'unknown setting (known: %s)',
                table.concat(keys, ', '))
        end
    end
    local src = config.source(function(key) return cfg[key] end, name)
    local base = fio.dirname(fio.dirname(fio.abspath(
        (debug.getinfo(1, 'S').source:gsub('^@', '')))))
    return {src = src, lib_dir = require('dialogs').read_lib_dir(src, base)}
end

-- The cluster configuration's bucket count (sharding.bucket_count), where a
-- Tarantool 3 configuration says; vshard's default otherwise.
function M.config_bucket_count()
    local get = require('dialogs').cluster_get()
    local n = get and get('sharding.bucket_count')
    return n or require('dialogs.bucket').DEFAULT_COUNT
end

-- The replica set and position of the member listening on `listen`, or nil.
function M.find_member(replicasets, listen)
    for _, rs in ipairs(replicasets) do
        for _, member in ipairs(rs.members) do
            if member == listen then
                return rs, member
            end
        end
    end
    return nil
end

-- The topology written back in its textual form (for logs and messages).
function M.describe(replicasets)
    local parts = {}
    for i, rs in ipairs(replicasets) do
        parts[i] = rs.name .. '=' .. table.concat(rs.members, ',')
    end
    return table.concat(parts, ';')
end

-- vshard's configuration (the same table for routers and storages) for the
-- topology, with `user`/`password` the account routers and storages log in to
-- storages as, and `bucket_count`. `box_cfg_mode = 'manual'`: box.cfg is ours.
-- `opts` adds vshard options (e.g. rebalancer_max_sending).
function M.vshard_cfg(replicasets, user, password, bucket_count, opts)
    local sharding = {}
    for _, rs in ipairs(replicasets) do
        local replicas = {}
        for _, member in ipairs(rs.members) do
            replicas[M.instance_uuid(rs.name, member)] = {
                uri = string.format('%s:%s@%s', user, password, member),
                name = rs.name .. '/' .. member,
            }
        end
        sharding[M.replicaset_uuid(rs.name)] = {replicas = replicas, master = 'auto'}
    end
    local cfg = {
        sharding = sharding,
        bucket_count = bucket_count,
        box_cfg_mode = 'manual',
    }
    for k, v in pairs(opts or {}) do
        cfg[k] = v
    end
    return cfg
end

return M

-- scripts/config-env.lua CONFIG NAME: the environment that `tarantool --config
-- CONFIG --name NAME` gets from the DIALOGS_* variables when `make run` starts a
-- Tarantool 3 server (scripts/run). Prints NAME=VALUE lines for scripts/run to
-- export, and exits 1 with a message naming the variable when one is bad. A data
-- directory of a Tarantool before 3.0 is upgraded and named first (adopt below).
--
-- Each variable is checked by the parser init.lua uses for it and becomes the
-- configuration option that does the same job (Tarantool's own TT_* variables,
-- which take precedence over the file). The few that only describe a 2.x set-up
-- are refused with where their job moved. A password never passes through here,
-- except the documented loopback development default when DIALOGS_PASSWORD is
-- unset (the role refuses that one beyond loopback, as init.lua does).

local fio = require('fio')
local json = require('json')
local yaml = require('yaml')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
local repo = fio.dirname(here)
package.path = fio.pathjoin(repo, '?.lua') .. ';' .. fio.pathjoin(repo, '?', 'init.lua')
    .. ';' .. package.path

local config = require('dialogs.config')
local report_store = require('dialogs.adopt')
local role = require('dialogs')
local schema = require('dialogs.schema')
local xlog = require('xlog')

local ENV = config.ENV

-- Variables whose job the configuration file does on Tarantool 3, and where.
-- (DIALOGS_REPLICATION_PASSWORD is not among them: config/replicaset-*.yaml read
-- it, and config/single.yaml has no replication user.)
local TAKEN_OVER = {
    user = 'the application user is declared in %s (credentials.users and '
        .. 'roles_cfg.dialogs.user)',
    peers = 'a replica set is described by config/replicaset-*.yaml '
        .. '(docs/operations.md, "Replication")',
    read_only = 'a replica set is described by config/replicaset-*.yaml '
        .. '(docs/operations.md, "Replication")',
    replication_user = 'the replication user is declared in config/replicaset-*.yaml',
    sync_quorum = 'replication.synchro_quorum and roles_cfg.dialogs.synchronous in '
        .. 'config/replicaset-*.yaml',
    sync_timeout = 'replication.synchro_timeout in config/replicaset-*.yaml',
    connect_timeout = 'replication.connect_timeout in config/replicaset-*.yaml',
}

-- _cluster: {id, uuid, name (3.0+)}.
local CLUSTER_SPACE_ID = 320

-- The replica set of `instance` in a decoded configuration file.
local function replicaset_of(file, instance)
    for _, group in pairs(file.groups or {}) do
        for name, rs in pairs(group.replicasets or {}) do
            if (rs.instances or {})[instance] ~= nil then
                return name
            end
        end
    end
    config.error('config', 'instance %q is not in %s', instance, 'the configuration')
end

-- True when `dir` holds data of a Tarantool before 3.0: its latest snapshot does
-- not name the instance (_cluster has no name for the snapshot's own uuid).
local function unnamed_data(dir)
    local snaps = fio.glob(fio.pathjoin(dir, '*.snap'))
    if #snaps == 0 then
        return false
    end
    table.sort(snaps)
    local own = xlog.meta(snaps[#snaps]).instance_uuid
    for _, rec in xlog.pairs(snaps[#snaps]) do
        local body = rec.BODY
        if body.space_id == CLUSTER_SPACE_ID and body.tuple[2] == own then
            return body.tuple[3] == nil
        end
    end
    return false
end

-- A configuration refuses to start on data without instance and replica set
-- names (and 3.8.0 cannot replay a 2.x WAL under a configuration), so such data
-- is adopted first, by this process as a plain instance with no listener: it
-- replays the WAL, upgrades the system spaces (as init.lua does: logged), names
-- the instance and its replica set as the configuration does, and snapshots.
-- Data of the report's own store (a plain instance's: never named) is recognised
-- here too, and anything else with a `dialogs` space refused before a write
-- (dialogs.adopt); the report's Lua functions, guest's grants and admin's
-- password go before the instance ever listens, and its space is set aside; the
-- role moves the messages (dialogs.setup, as init.lua does).
local function adopt(dir, s, instance, replicaset)
    io.stderr:write(string.format('dialogs: %s holds data without instance names (a '
        .. 'Tarantool before 3.0, or a plain instance): upgrading it if need be and '
        .. 'naming it %s/%s for the configuration\n', dir, replicaset, instance))
    box.cfg({memtx_dir = dir, wal_dir = dir, vinyl_dir = dir, memtx_memory = s.memtx_memory,
        log_level = s.log_level})
    local found = report_store.inspect()
    schema.upgrade_system_spaces()
    if found ~= nil then
        report_store.prepare()
    end
    box.cfg({replicaset_name = replicaset, instance_name = instance})
    box.snapshot()
end

local function main(config_path, instance)
    local env = os.environ()
    local src = config.env_source(env)
    for key, where in pairs(TAKEN_OVER) do
        if src.get(key) ~= nil then
            config.error(ENV[key], 'not read on Tarantool 3: ' .. where, config_path)
        end
    end

    local out = {}
    local function set(name, value)
        value = tostring(value)
        if value:find('[\r\n]') then
            config.error(name, 'contains a line break')
        end
        table.insert(out, name .. '=' .. value)
    end

    -- The same defaults as init.lua: checked whether set or not, exported when set.
    local s = config.read_server(src, repo)
    if src.get('listen') ~= nil then
        set('TT_IPROTO_LISTEN', json.encode({{uri = s.listen}}))
    end
    if src.get('data_dir') ~= nil then
        for _, opt in ipairs({'TT_SNAPSHOT_DIR', 'TT_WAL_DIR', 'TT_VINYL_DIR'}) do
            set(opt, s.data_dir)
        end
        set('TT_PROCESS_PID_FILE', fio.pathjoin(s.data_dir, 'tarantool.pid'))
        set('TT_CONSOLE_SOCKET', fio.pathjoin(s.data_dir, 'tarantool.control'))
    end
    if src.get('admin_socket') ~= nil then
        set('TT_CONSOLE_SOCKET', config.parse_socket_path(ENV.admin_socket,
            src.get('admin_socket')))
    end
    if src.get('memtx_memory') ~= nil then
        set('TT_MEMTX_MEMORY', s.memtx_memory)
    end
    if src.get('wal_mode') ~= nil then
        set('TT_WAL_MODE', s.wal_mode)
    end
    if src.get('log_level') ~= nil then
        set('TT_LOG_LEVEL', s.log_level)
    end

    -- The role's settings: the file's roles_cfg.dialogs with the variables over it.
    config.read_guest(src)
    config.read_slow_ms(src)
    if src.get('lib_dir') ~= nil or src.get('request_ttl') ~= nil or src.get('guest') ~= nil
            or src.get('slow_ms') ~= nil then
        local f = assert(io.open(config_path))
        local file = yaml.decode(f:read('*a'))
        f:close()
        local roles_cfg = file.roles_cfg or {}
        local mine = roles_cfg[role.NAME] or {}
        if src.get('lib_dir') ~= nil then
            mine.lib_dir = config.read_lib_dir(src, repo)
        end
        if src.get('request_ttl') ~= nil then
            mine.request_ttl = config.read_request_ttl(src)
        end
        if src.get('guest') ~= nil then
            mine.guest = config.read_guest(src)
        end
        if src.get('slow_ms') ~= nil then
            mine.slow_ms = config.read_slow_ms(src)
        end
        roles_cfg[role.NAME] = mine
        set('TT_ROLES_CFG', json.encode(roles_cfg))
    end

    -- The library on package.cpath from the process's start: the instance listens
    -- (and a restarted one serves its recovered functions) before the role has
    -- run, and a call then would not find the module (138).
    local lib_dir = role.settings({lib_dir = src.get('lib_dir')}, repo).lib_dir
    if lib_dir ~= nil then
        set('LUA_CPATH', fio.pathjoin(lib_dir, '?.so') .. ';' .. (env.LUA_CPATH or ';'))
    end

    local data_dir = src.get('data_dir') ~= nil and s.data_dir or fio.pathjoin(repo, 'data')
    if unnamed_data(data_dir) then
        local f = assert(io.open(config_path))
        local file = yaml.decode(f:read('*a'))
        f:close()
        adopt(data_dir, s, instance, replicaset_of(file, instance))
    end

    if src.get('password') == nil then
        -- The development default on loopback; refused (naming the variables) beyond.
        set(ENV.password, config.read_password(src, s.listen))
    else
        config.read_password(src, s.listen)
    end
    return out
end

local ok, res = pcall(main, arg[1], arg[2])
if not ok then
    io.stderr:write(tostring(res), '\n')
    os.exit(1)
end
for _, line in ipairs(res) do
    print(line)
end
os.exit(0)

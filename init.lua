-- dialogs: one Tarantool instance of the direct-message store.
--
--   tarantool init.lua
--
-- Reads its configuration from DIALOGS_* environment variables (README.md,
-- "Configuration"), validates all of it before touching the database, runs
-- box.cfg, applies the versioned schema migrations, registers the native
-- procedures and sets up the application user. Safe to run on every start.

local fio = require('fio')
local log = require('log')

local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:gsub('^@', '')))

local MIB = 1024 * 1024

-- Where the instance listens by default: loopback only.
local DEFAULT_LISTEN = '127.0.0.1:3301'
-- The application user's password when none is given and the instance listens on
-- loopback only. Never accepted beyond loopback.
local DEV_PASSWORD = 'dialogs'
-- The native procedures clients call; each lives in <name>.so in the library dir.
local PROCEDURES = {'new_dialog', 'get_dialog'}

------------------------------------------------------------------------------
-- Capabilities: probed, never inferred from a version string.
------------------------------------------------------------------------------

-- The `datetime` field type and module arrived together (2.10).
local function tarantool_supports_datetime()
    return (pcall(require, 'datetime'))
end

------------------------------------------------------------------------------
-- Configuration
------------------------------------------------------------------------------

local function config_error(var, fmt, ...)
    error(string.format('dialogs: %s: ' .. fmt, var, ...), 0)
end

-- True when the listen URI only accepts connections from this machine: a
-- loopback address or a unix socket.
local function is_loopback_listen(listen)
    if listen:match('^unix/:') or listen:sub(1, 1) == '/' then
        return true
    end
    local host = listen:match('^%[(.-)%]:%d+$') or listen:match('^(.*):%d+$')
    if host == nil then
        -- A bare port listens on every interface.
        return false
    end
    host = host:gsub('^[^@]*@', '')
    return host == 'localhost' or host == '::1' or host:match('^127%.%d+%.%d+%.%d+$') ~= nil
end

local function parse_listen(var, value)
    if value:match('^unix/:.+') or value:sub(1, 1) == '/' then
        return value
    end
    local port = value:match(':(%d+)$')
    if port == nil or tonumber(port) < 1 or tonumber(port) > 65535 then
        config_error(var, 'expected HOST:PORT (port 1..65535) or unix/:PATH, got %q', value)
    end
    return value
end

local function parse_bytes(var, value, min)
    local n = tonumber(value)
    if n == nil or n ~= math.floor(n) then
        config_error(var, 'expected a whole number of bytes, got %q', value)
    end
    if n < min then
        config_error(var, 'must be at least %d bytes, got %d', min, n)
    end
    return n
end

local function parse_enum(var, value, allowed)
    for _, a in ipairs(allowed) do
        if value == a then
            return value
        end
    end
    config_error(var, 'expected one of %s, got %q', table.concat(allowed, ', '), value)
end

local function parse_user_name(var, value)
    if not value:match('^[%a_][%w_]*$') or value == 'guest' or value == 'admin' then
        config_error(var, 'expected a user name of letters, digits and _ '
            .. '(not guest or admin), got %q', value)
    end
    return value
end

-- Every DIALOGS_* variable this script reads, with its default and parser.
local function read_config(env)
    local function get(var, default)
        local v = env[var]
        if v == nil or v == '' then
            return default
        end
        return v
    end
    local cfg = {}
    cfg.listen = parse_listen('DIALOGS_LISTEN', get('DIALOGS_LISTEN', DEFAULT_LISTEN))
    cfg.data_dir = fio.abspath(get('DIALOGS_DATA_DIR', fio.pathjoin(here, 'data')))
    cfg.lib_dir = fio.abspath(get('DIALOGS_LIB_DIR', fio.pathjoin(here, 'target', 'dialogs')))
    cfg.user = parse_user_name('DIALOGS_USER', get('DIALOGS_USER', 'dialogs'))
    cfg.memtx_memory = parse_bytes('DIALOGS_MEMTX_MEMORY',
        get('DIALOGS_MEMTX_MEMORY', tostring(1024 * MIB)), 32 * MIB)
    cfg.wal_mode = parse_enum('DIALOGS_WAL_MODE', get('DIALOGS_WAL_MODE', 'write'),
        {'write', 'fsync'})
    cfg.log_level = tonumber(parse_enum('DIALOGS_LOG_LEVEL', get('DIALOGS_LOG_LEVEL', '5'),
        {'1', '2', '3', '4', '5', '6', '7'}))

    local loopback = is_loopback_listen(cfg.listen)
    cfg.password = get('DIALOGS_PASSWORD', nil)
    if cfg.password == nil then
        if not loopback then
            config_error('DIALOGS_PASSWORD', 'must be set when DIALOGS_LISTEN (%s) '
                .. 'is not a loopback address', cfg.listen)
        end
        cfg.password = DEV_PASSWORD
    elseif not loopback and cfg.password == DEV_PASSWORD then
        config_error('DIALOGS_PASSWORD', 'the development password is refused when '
            .. 'DIALOGS_LISTEN (%s) is not a loopback address', cfg.listen)
    end

    for _, name in ipairs(PROCEDURES) do
        local so = fio.pathjoin(cfg.lib_dir, name .. '.so')
        if not fio.path.exists(so) then
            config_error('DIALOGS_LIB_DIR', '%s not found (run `make build`)', so)
        end
    end
    return cfg
end

------------------------------------------------------------------------------
-- Schema: an ordered list of migrations. The applied version lives in _schema
-- under 'dialogs_schema_version'; each start applies the missing ones, in one
-- transaction each, and only where the instance is writable.
------------------------------------------------------------------------------

local SCHEMA_VERSION_KEY = 'dialogs_schema_version'

local migrations = {
    -- v1: the message space, its two indexes, and the retry log.
    function()
        local created_at = tarantool_supports_datetime() and 'datetime' or 'unsigned'
        local s = box.schema.space.create('dialogs', {
            engine = 'memtx',
            format = {
                {name = 'id', type = 'uuid'},
                {name = 'dialog_id', type = 'uuid'},
                {name = 'user_from_id', type = 'uuid'},
                {name = 'user_to_id', type = 'uuid'},
                {name = 'text', type = 'string'},
                {name = 'created_at', type = created_at},
            },
        })
        s:create_index('pk', {type = 'TREE', parts = {{field = 'id', type = 'uuid'}}})
        s:create_index('dialog_id_k', {
            type = 'TREE',
            unique = true,
            parts = {{field = 'dialog_id', type = 'uuid'}, {field = 'id', type = 'uuid'}},
        })
        -- new_dialog's opts.request_id -> the message it stored, so that a retried
        -- call returns the first call's id instead of storing the message twice.
        local r = box.schema.space.create('dialogs_requests', {
            engine = 'memtx',
            format = {
                {name = 'request_id', type = 'uuid'},
                {name = 'message_id', type = 'uuid'},
            },
        })
        r:create_index('pk', {type = 'TREE', parts = {{field = 'request_id', type = 'uuid'}}})
    end,
}

local function schema_version()
    local t = box.space._schema:get{SCHEMA_VERSION_KEY}
    return t and t[2] or 0
end

local function migrate()
    local from = schema_version()
    if from > #migrations then
        error(string.format('dialogs: the data is at schema version %d, newer than this '
            .. 'release knows (%d)', from, #migrations), 0)
    end
    for v = from + 1, #migrations do
        box.begin()
        migrations[v]()
        box.space._schema:replace{SCHEMA_VERSION_KEY, v}
        box.commit()
        log.info('dialogs: schema migrated to version %d', v)
    end
end

-- The native procedures: C functions, run with their owner's rights (setuid) so
-- that a caller with only `execute` can reach the space.
local function register_functions()
    for _, name in ipairs(PROCEDURES) do
        box.schema.func.create(name, {language = 'C', setuid = true, if_not_exists = true})
    end
end

-- The application user may call the two procedures and do nothing else.
local function setup_user(cfg)
    if box.schema.user.exists(cfg.user) then
        box.schema.user.passwd(cfg.user, cfg.password)
    else
        box.schema.user.create(cfg.user, {password = cfg.password})
    end
    for _, name in ipairs(PROCEDURES) do
        box.schema.user.grant(cfg.user, 'execute', 'function', name, {if_not_exists = true})
    end
end

------------------------------------------------------------------------------
-- Start
------------------------------------------------------------------------------

local cfg = read_config(os.environ())

package.cpath = cfg.lib_dir .. '/?.so;' .. package.cpath

fio.mktree(cfg.data_dir)
box.cfg({
    listen = cfg.listen,
    memtx_dir = cfg.data_dir,
    wal_dir = cfg.data_dir,
    vinyl_dir = cfg.data_dir,
    memtx_memory = cfg.memtx_memory,
    wal_mode = cfg.wal_mode,
    log_level = cfg.log_level,
})

if not box.info.ro then
    box.session.su('admin', function()
        migrate()
        register_functions()
        setup_user(cfg)
    end)
end

log.info('dialogs: listening on %s as user %q (data in %s)', cfg.listen, cfg.user, cfg.data_dir)

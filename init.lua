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

-- Whether the server has the compat option that decides if the results of a C
-- function travel over IPROTO wrapped in one array (always so before it existed).
local function tarantool_has_c_multireturn_option()
    local ok, compat = pcall(require, 'compat')
    return ok and (pcall(function() return compat.c_func_iproto_multireturn end))
end

-- One reply shape on every server: the results of new_dialog and get_dialog
-- arrive as one array (README, "Reply shape"), as Tarantool 2.x always sends
-- them. Servers that made the wrapper optional (3.0+) are told to keep it.
local function keep_c_results_wrapped()
    if tarantool_has_c_multireturn_option() then
        require('compat').c_func_iproto_multireturn = 'old'
    end
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
    if value:match('^%d+$') and tonumber(value) >= 1 and tonumber(value) <= 65535 then
        return value -- a bare port: every interface
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
-- that a caller with only `execute` can reach the space. A function of that name
-- defined otherwise (by hand, or by an older release) is replaced; setup_user
-- grants execute again afterwards.
local function register_functions()
    for _, name in ipairs(PROCEDURES) do
        local f = box.func[name]
        if f ~= nil and (f.language ~= 'C' or not f.setuid) then
            log.warn('dialogs: function %s was not a setuid C function: redefining it', name)
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {language = 'C', setuid = true, if_not_exists = true})
    end
end

-- Tarantool's built-in 'public' role, held by guest and every user, carries
-- grants that reach past the two procedures on some versions: executing the SQL
-- function LUA() (any Lua text, as the caller) and writing the system spaces
-- _truncate and _collation. Revoked wherever they exist.
local PUBLIC_GRANTS_REVOKED = {
    {'execute', 'function', 'LUA'},
    {'write', 'space', '_truncate'},
    {'write', 'space', '_collation'},
}

local function restrict_public_role()
    for _, g in ipairs(PUBLIC_GRANTS_REVOKED) do
        local privilege, object_type, object_name = unpack(g)
        local exists = object_type == 'space' and box.space[object_name] ~= nil
            or object_type == 'function' and box.func[object_name] ~= nil
        if exists then
            box.schema.role.revoke('public', privilege, object_type, object_name,
                {if_exists = true})
        end
    end
end

-- The name of the application user is kept in _schema, so that renaming it
-- (DIALOGS_USER) removes the old one instead of leaving it able to log in.
local APP_USER_KEY = 'dialogs_app_user'

-- The application user may call the two procedures and do nothing else.
local function setup_user(cfg)
    local previous = box.space._schema:get{APP_USER_KEY}
    previous = previous and previous[2]
    if previous ~= nil and previous ~= cfg.user and box.schema.user.exists(previous) then
        log.warn('dialogs: DIALOGS_USER changed from %q to %q: dropping user %q',
            previous, cfg.user, previous)
        box.schema.user.drop(previous)
    end
    box.space._schema:replace{APP_USER_KEY, cfg.user}
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
-- Replication (docs/replication-section.md): peers, read-only replicas, the
-- replication user, the optional synchronous quorum, and the admin socket that
-- scripts/promote talks to. Everything here is off unless its variable is set;
-- a standalone instance behaves as before.
------------------------------------------------------------------------------

-- The replication user when DIALOGS_REPLICATION_USER is unset.
local DEFAULT_REPLICATION_USER = 'replicator'
-- Seconds box.cfg waits for peers (bootstrap, and a replica's restart).
local DEFAULT_REPLICATION_CONNECT_TIMEOUT_S = 30
-- The spaces whose writes wait for the quorum when DIALOGS_SYNC_QUORUM is set.
local SYNC_SPACES = {'dialogs', 'dialogs_requests'}
-- Tarantool keeps at most 32 instances in a replica set (VCLOCK_MAX).
local MAX_INSTANCES = 32
-- sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
local MAX_UNIX_PATH = 107
-- Characters a password may contain and still sit in a user:password@host URI
-- (RFC 3986 unreserved and sub-delims); Tarantool 2.6 takes peers as URIs only.
local URI_PASSWORD_PATTERN = "^[%w%-%._~!%$&'%(%)%*%+,;=]+$"

-- `space_object:alter` arrived in 2.7; before it, is_sync lives in _space.flags.
local function tarantool_supports_space_alter()
    return box.space._space.alter ~= nil
end

local function parse_bool(var, value)
    if value == 'true' then
        return true
    elseif value == 'false' then
        return false
    end
    config_error(var, 'expected true or false, got %q', value)
end

local function parse_int(var, value, min, max)
    local n = tonumber(value)
    if n == nil or n ~= math.floor(n) or n < min or n > max then
        config_error(var, 'expected a whole number %d..%d, got %q', min, max, value)
    end
    return n
end

local function parse_seconds(var, value)
    local n = tonumber(value)
    if n == nil or n <= 0 or n ~= n or n == math.huge then
        config_error(var, 'expected a positive number of seconds, got %q', value)
    end
    return n
end

-- DIALOGS_REPLICATION: comma-separated HOST:PORT or unix/:PATH, no credentials
-- (those come from DIALOGS_REPLICATION_USER / _PASSWORD, never from a URI).
local function parse_peers(var, value)
    local peers = {}
    for item in (value .. ','):gmatch('([^,]*),') do
        item = item:match('^%s*(.-)%s*$')
        if item == '' then
            config_error(var, 'empty entry in %q (expected HOST:PORT,HOST:PORT,...)', value)
        end
        if item:find('@', 1, true) then
            config_error(var, 'peer %q carries credentials; set DIALOGS_REPLICATION_USER '
                .. 'and DIALOGS_REPLICATION_PASSWORD instead', item:gsub('^.*@', '...@'))
        end
        table.insert(peers, parse_listen(var, item))
    end
    if #peers > MAX_INSTANCES then
        config_error(var, 'at most %d peers, got %d', MAX_INSTANCES, #peers)
    end
    return peers
end

local function parse_socket_path(var, value)
    local path = fio.abspath(value)
    if #path > MAX_UNIX_PATH then
        config_error(var, 'unix socket path longer than %d bytes: %q', MAX_UNIX_PATH, path)
    end
    if not fio.path.is_dir(fio.dirname(path)) then
        config_error(var, 'directory %q does not exist', fio.dirname(path))
    end
    return path
end

-- The DIALOGS_* replication variables, validated like read_config's.
local function read_replication_config(env, app_user)
    local function get(var)
        local v = env[var]
        return v ~= '' and v or nil
    end
    local r = {}
    local peers = get('DIALOGS_REPLICATION')
    r.peers = peers and parse_peers('DIALOGS_REPLICATION', peers) or {}
    r.read_only = parse_bool('DIALOGS_READ_ONLY', get('DIALOGS_READ_ONLY') or 'false')
    if r.read_only and #r.peers == 0 then
        config_error('DIALOGS_READ_ONLY', 'a read-only instance needs a master to follow: '
            .. 'set DIALOGS_REPLICATION')
    end
    r.user = parse_user_name('DIALOGS_REPLICATION_USER',
        get('DIALOGS_REPLICATION_USER') or DEFAULT_REPLICATION_USER)
    if r.user == app_user then
        config_error('DIALOGS_REPLICATION_USER', 'must differ from DIALOGS_USER (%q)', app_user)
    end
    r.password = get('DIALOGS_REPLICATION_PASSWORD')
    if r.password == nil and #r.peers > 0 then
        config_error('DIALOGS_REPLICATION_PASSWORD', 'must be set when DIALOGS_REPLICATION is set')
    end
    if r.password ~= nil and not r.password:match(URI_PASSWORD_PATTERN) then
        config_error('DIALOGS_REPLICATION_PASSWORD', 'may contain only letters, digits and '
            .. "-._~!$&'()*+,;= (it travels inside a peer URI)")
    end
    local quorum = get('DIALOGS_SYNC_QUORUM')
    r.sync_quorum = quorum and parse_int('DIALOGS_SYNC_QUORUM', quorum, 1, MAX_INSTANCES)
    local sync_timeout = get('DIALOGS_SYNC_TIMEOUT')
    if sync_timeout ~= nil and r.sync_quorum == nil then
        config_error('DIALOGS_SYNC_TIMEOUT', 'only means something with DIALOGS_SYNC_QUORUM')
    end
    r.sync_timeout = sync_timeout and parse_seconds('DIALOGS_SYNC_TIMEOUT', sync_timeout)
    r.connect_timeout = parse_seconds('DIALOGS_REPLICATION_CONNECT_TIMEOUT',
        get('DIALOGS_REPLICATION_CONNECT_TIMEOUT')
        or tostring(DEFAULT_REPLICATION_CONNECT_TIMEOUT_S))
    local admin = get('DIALOGS_ADMIN_SOCKET')
    r.admin_socket = admin and parse_socket_path('DIALOGS_ADMIN_SOCKET', admin)
    return r
end

-- The box.cfg options of replication, added to `opts`.
--
-- A writable instance (the master) starts at once with whichever peers answer
-- (connect quorum 0), so a replica being down never keeps it from taking writes.
-- A replica needs one peer: on its first start it waits up to the connect
-- timeout for a master to join (Tarantool exits if none answers); on a restart
-- it serves its local copy after that wait and catches up in the background.
local function with_replication(r, opts)
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
    if tarantool_supports_space_alter() then
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

-- Makes the message spaces synchronous exactly when DIALOGS_SYNC_QUORUM is set.
-- is_sync is stored in the schema and replicated, so the writable instance's
-- configuration decides for the whole replica set, on every start: setting the
-- variable turns it on, unsetting it turns it off again (back to asynchronous).
local function apply_sync_mode(r)
    local on = r.sync_quorum ~= nil
    for _, name in ipairs(SYNC_SPACES) do
        local space = box.space[name]
        if (space.is_sync or false) ~= on then
            set_space_sync(space, on)
            log.info('dialogs: space %s is now %s', name, on and 'synchronous' or 'asynchronous')
        end
    end
end

-- The user peers log in as: the 'replication' role and nothing else.
local function setup_replication_user(r)
    if r.password == nil then
        return
    end
    if box.schema.user.exists(r.user) then
        box.schema.user.passwd(r.user, r.password)
    else
        box.schema.user.create(r.user, {password = r.password})
    end
    box.schema.user.grant(r.user, 'replication', nil, nil, {if_not_exists = true})
end

-- The admin console scripts/promote uses: a unix socket, owner-only (0600),
-- created under a umask so that it is never reachable by others, even briefly.
local function open_admin_socket(r)
    if r.admin_socket == nil then
        return
    end
    if fio.path.lexists(r.admin_socket) then
        fio.unlink(r.admin_socket) -- a stale socket of a previous run
    end
    local old = fio.umask(tonumber('177', 8))
    local ok, err = pcall(require('console').listen, 'unix/:' .. r.admin_socket)
    fio.umask(old)
    if not ok then
        error(string.format('dialogs: DIALOGS_ADMIN_SOCKET: cannot listen on %s: %s',
            r.admin_socket, err), 0)
    end
    fio.chmod(r.admin_socket, tonumber('600', 8))
end

local function describe_replication(r)
    if #r.peers == 0 and not r.sync_quorum then
        return 'standalone'
    end
    return string.format('%s, peers %s, %s', r.read_only and 'read-only replica' or 'writable',
        table.concat(r.peers, ','),
        r.sync_quorum and ('synchronous, quorum ' .. r.sync_quorum) or 'asynchronous')
end

------------------------------------------------------------------------------
-- Start
------------------------------------------------------------------------------

local cfg = read_config(os.environ())
cfg.replication = read_replication_config(os.environ(), cfg.user)

package.cpath = cfg.lib_dir .. '/?.so;' .. package.cpath
keep_c_results_wrapped()

fio.mktree(cfg.data_dir)
box.cfg(with_replication(cfg.replication, {
    listen = cfg.listen,
    memtx_dir = cfg.data_dir,
    wal_dir = cfg.data_dir,
    vinyl_dir = cfg.data_dir,
    memtx_memory = cfg.memtx_memory,
    wal_mode = cfg.wal_mode,
    log_level = cfg.log_level,
}))

if not box.info.ro then
    box.session.su('admin', function()
        migrate()
        apply_sync_mode(cfg.replication)
        register_functions()
        setup_user(cfg)
        restrict_public_role()
        setup_replication_user(cfg.replication)
    end)
end

open_admin_socket(cfg.replication)
log.info('dialogs: replication: %s', describe_replication(cfg.replication))
log.info('dialogs: listening on %s as user %q (data in %s)', cfg.listen, cfg.user, cfg.data_dir)
if cfg.password == DEV_PASSWORD then
    log.info('dialogs: connect as %s, password %q (the loopback development default): '
        .. "require('net.box').connect('%s:%s@%s'), then call new_dialog / get_dialog",
        cfg.user, DEV_PASSWORD, cfg.user, DEV_PASSWORD, cfg.listen)
else
    log.info('dialogs: connect as %s with the password in DIALOGS_PASSWORD, '
        .. 'then call new_dialog / get_dialog', cfg.user)
end

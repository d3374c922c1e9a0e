-- dialogs.config: the store's settings, parsed and validated up front.
--
-- Pure functions: nothing here touches box, and nothing runs at load time. A
-- setting is read through a `source`, which says where raw values come from and
-- how a setting is named in error messages:
--
--   config.env_source(os.environ())   -- DIALOGS_* variables (init.lua, 2.x)
--   config.source(get, name)          -- anything else, e.g. a role's roles_cfg
--
-- Parsers accept the strings of the environment and the typed values of a YAML
-- configuration alike (`'5'` or `5`, `'true'` or `true`). Every refusal is a Lua
-- error 'dialogs: <name>: <what is wrong>' raised before anything is changed.

local fio = require('fio')

local M = {}

local MIB = 1024 * 1024

-- The native procedures clients call; each lives in <name>.so in the library dir.
M.PROCEDURES = {'new_dialog', 'get_dialog', 'list_dialogs', 'mark_read'}
-- Those guest may be given (DIALOGS_GUEST=execute): the message calls. The
-- inbox's calls name a user's inbox, which only a signed-in application may do.
M.GUEST_PROCEDURES = {'new_dialog', 'get_dialog'}
-- Native entries every instance defines and grants to no one (schema code only).
M.INTERNAL_PROCEDURES = {'dialogs_inbox_build'}

-- Every name the library must be found under on every instance: the client
-- procedures and the internal entries.
function M.library_names()
    local names = {}
    for _, list in ipairs({M.PROCEDURES, M.INTERNAL_PROCEDURES}) do
        for _, name in ipairs(list) do
            table.insert(names, name)
        end
    end
    return names
end

-- Names as a sentence lists them: 'a', 'a and b', 'a, b and c'.
function M.names_text(names)
    if #names <= 1 then
        return names[1] or ''
    end
    return table.concat(names, ', ', 1, #names - 1) .. ' and ' .. names[#names]
end

-- What guest (anyone, no password) may do: nothing (the default), or execute the
-- client procedures, for clients that cannot log in (docs/operations.md, "Guest access").
M.GUEST_NONE = 'none'
M.GUEST_EXECUTE = 'execute'
M.GUEST_ACCESS = {M.GUEST_NONE, M.GUEST_EXECUTE}

-- Where the instance listens by default: loopback only.
M.DEFAULT_LISTEN = '127.0.0.1:3301'
-- The application user's password when none is given and the instance listens on
-- loopback only. Never accepted beyond loopback.
M.DEV_PASSWORD = 'dialogs'
M.DEFAULT_USER = 'dialogs'
M.DEFAULT_MEMTX_MEMORY = 1024 * MIB
M.MIN_MEMTX_MEMORY = 32 * MIB
-- How long a request id (new_dialog's opts.request_id) is remembered: 7 days.
M.DEFAULT_REQUEST_TTL_S = 7 * 24 * 3600
-- The replication user when none is named.
M.DEFAULT_REPLICATION_USER = 'replicator'
-- Seconds box.cfg waits for peers (bootstrap, and a replica's restart).
M.DEFAULT_REPLICATION_CONNECT_TIMEOUT_S = 30
-- Tarantool keeps at most 32 instances in a replica set (VCLOCK_MAX).
M.MAX_INSTANCES = 32
-- sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
M.MAX_UNIX_PATH = 107
-- Characters a password may contain and still sit in a user:password@host URI
-- (RFC 3986 unreserved and sub-delims); Tarantool 2.6 takes peers as URIs only.
local URI_PASSWORD_PATTERN = "^[%w%-%._~!%$&'%(%)%*%+,;=]+$"

-- The environment variable of each setting.
M.ENV = {
    listen = 'DIALOGS_LISTEN',
    data_dir = 'DIALOGS_DATA_DIR',
    lib_dir = 'DIALOGS_LIB_DIR',
    user = 'DIALOGS_USER',
    password = 'DIALOGS_PASSWORD',
    memtx_memory = 'DIALOGS_MEMTX_MEMORY',
    wal_mode = 'DIALOGS_WAL_MODE',
    log_level = 'DIALOGS_LOG_LEVEL',
    request_ttl = 'DIALOGS_REQUEST_TTL',
    peers = 'DIALOGS_REPLICATION',
    read_only = 'DIALOGS_READ_ONLY',
    replication_user = 'DIALOGS_REPLICATION_USER',
    replication_password = 'DIALOGS_REPLICATION_PASSWORD',
    sync_quorum = 'DIALOGS_SYNC_QUORUM',
    sync_timeout = 'DIALOGS_SYNC_TIMEOUT',
    connect_timeout = 'DIALOGS_REPLICATION_CONNECT_TIMEOUT',
    admin_socket = 'DIALOGS_ADMIN_SOCKET',
    bucket_count = 'DIALOGS_BUCKET_COUNT',
    sharding = 'DIALOGS_SHARDING',
    router = 'DIALOGS_ROUTER',
    router_timeout = 'DIALOGS_ROUTER_TIMEOUT',
    rebalancer_max_sending = 'DIALOGS_REBALANCER_MAX_SENDING',
    guest = 'DIALOGS_GUEST',
}

------------------------------------------------------------------------------
-- Sources
------------------------------------------------------------------------------

-- A source from `get(key)` (the raw value or nil) and `name(key)` (how messages
-- name the setting). An empty string counts as unset.
function M.source(get, name)
    return {
        get = function(key)
            local v = get(key)
            if v == '' then
                return nil
            end
            return v
        end,
        name = name,
    }
end

-- The DIALOGS_* variables of `env` (a table such as os.environ()).
function M.env_source(env)
    return M.source(function(key)
        return env[M.ENV[key]]
    end, function(key)
        return M.ENV[key]
    end)
end

------------------------------------------------------------------------------
-- Parsers: (name, value, ...) -> the value in its own type, or an error naming
-- the setting.
------------------------------------------------------------------------------

function M.error(name, fmt, ...)
    error(string.format('dialogs: %s: ' .. fmt, name, ...), 0)
end

-- A value as it appears in an error message: quoted, whatever its type.
local function show(value)
    return string.format('%q', tostring(value))
end

local function whole(value)
    local n = tonumber(value)
    if n == nil or n ~= math.floor(n) or n ~= n or n == math.huge or n == -math.huge then
        return nil
    end
    return n
end

-- True when the listen URI only accepts connections from this machine: a
-- loopback address or a unix socket.
function M.is_loopback_listen(listen)
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

-- HOST:PORT, a bare PORT, or unix/:PATH (or an absolute path).
function M.parse_listen(name, value)
    if type(value) == 'number' then
        value = tostring(value)
    end
    if type(value) ~= 'string' then
        M.error(name, 'expected HOST:PORT (port 1..65535) or unix/:PATH, got %s', show(value))
    end
    if value:match('^unix/:.+') or value:sub(1, 1) == '/' then
        return value
    end
    if value:match('^%d+$') and tonumber(value) >= 1 and tonumber(value) <= 65535 then
        return value -- a bare port: every interface
    end
    local port = value:match(':(%d+)$')
    if port == nil or tonumber(port) < 1 or tonumber(port) > 65535 then
        M.error(name, 'expected HOST:PORT (port 1..65535) or unix/:PATH, got %q', value)
    end
    return value
end

function M.parse_bytes(name, value, min)
    local n = whole(value)
    if n == nil then
        M.error(name, 'expected a whole number of bytes, got %s', show(value))
    end
    if n < min then
        M.error(name, 'must be at least %d bytes, got %d', min, n)
    end
    return n
end

function M.parse_enum(name, value, allowed)
    for _, a in ipairs(allowed) do
        if tostring(value) == a then
            return a
        end
    end
    M.error(name, 'expected one of %s, got %s', table.concat(allowed, ', '), show(value))
end

function M.parse_user_name(name, value)
    if type(value) ~= 'string' or not value:match('^[%a_][%w_]*$')
            or value == 'guest' or value == 'admin' then
        M.error(name, 'expected a user name of letters, digits and _ '
            .. '(not guest or admin), got %s', show(value))
    end
    return value
end

function M.parse_bool(name, value)
    if value == 'true' or value == true then
        return true
    elseif value == 'false' or value == false then
        return false
    end
    M.error(name, 'expected true or false, got %s', show(value))
end

function M.parse_int(name, value, min, max)
    local n = whole(value)
    if n == nil or n < min or n > max then
        M.error(name, 'expected a whole number %d..%d, got %s', min, max, show(value))
    end
    return n
end

-- A positive, finite number of seconds (fractions allowed).
function M.parse_seconds(name, value)
    local n = tonumber(value)
    if n == nil or n <= 0 or n ~= n or n == math.huge then
        M.error(name, 'expected a positive number of seconds, got %s', show(value))
    end
    return n
end

-- Replication peers: HOST:PORT or unix/:PATH, comma-separated (or a list), no
-- credentials (those come from the replication user and password settings).
function M.parse_peers(name, value, credentials_hint)
    if type(value) == 'table' then
        local items = {}
        for i, item in ipairs(value) do
            items[i] = tostring(item)
        end
        value = table.concat(items, ',')
    end
    if type(value) ~= 'string' then
        M.error(name, 'expected HOST:PORT,HOST:PORT,..., got %s', show(value))
    end
    local peers = {}
    for item in (value .. ','):gmatch('([^,]*),') do
        item = item:match('^%s*(.-)%s*$')
        if item == '' then
            M.error(name, 'empty entry in %q (expected HOST:PORT,HOST:PORT,...)', value)
        end
        if item:find('@', 1, true) then
            M.error(name, 'peer %q carries credentials; %s', (item:gsub('^.*@', '...@')),
                credentials_hint or 'name the replication user and password instead')
        end
        table.insert(peers, M.parse_listen(name, item))
    end
    if #peers > M.MAX_INSTANCES then
        M.error(name, 'at most %d peers, got %d', M.MAX_INSTANCES, #peers)
    end
    return peers
end

-- An absolute unix socket path whose directory exists and that fits sun_path.
function M.parse_socket_path(name, value)
    if type(value) ~= 'string' then
        M.error(name, 'expected a path, got %s', show(value))
    end
    local path = fio.abspath(value)
    if #path > M.MAX_UNIX_PATH then
        M.error(name, 'unix socket path longer than %d bytes: %q', M.MAX_UNIX_PATH, path)
    end
    if not fio.path.is_dir(fio.dirname(path)) then
        M.error(name, 'directory %q does not exist', fio.dirname(path))
    end
    return path
end

------------------------------------------------------------------------------
-- Groups of settings. Each takes a source; `base_dir` anchors the relative
-- defaults (data/ and target/dialogs/ beside init.lua).
------------------------------------------------------------------------------

local function get_or(src, key, default)
    local v = src.get(key)
    if v == nil then
        return default
    end
    return v
end

-- What only a self-managed instance (init.lua) sets: box.cfg's own options.
-- {listen, data_dir, memtx_memory, wal_mode, log_level}
function M.read_server(src, base_dir)
    local s = {}
    s.listen = M.parse_listen(src.name('listen'), get_or(src, 'listen', M.DEFAULT_LISTEN))
    s.data_dir = fio.abspath(get_or(src, 'data_dir', fio.pathjoin(base_dir, 'data')))
    s.memtx_memory = M.parse_bytes(src.name('memtx_memory'),
        get_or(src, 'memtx_memory', M.DEFAULT_MEMTX_MEMORY), M.MIN_MEMTX_MEMORY)
    s.wal_mode = M.parse_enum(src.name('wal_mode'), get_or(src, 'wal_mode', 'write'),
        {'write', 'fsync'})
    s.log_level = tonumber(M.parse_enum(src.name('log_level'), get_or(src, 'log_level', 5),
        {'1', '2', '3', '4', '5', '6', '7'}))
    return s
end

-- The directory of the built module, checked to hold every procedure.
function M.read_lib_dir(src, base_dir)
    local dir = fio.abspath(get_or(src, 'lib_dir', fio.pathjoin(base_dir, 'target', 'dialogs')))
    for _, proc in ipairs(M.library_names()) do
        local so = fio.pathjoin(dir, proc .. '.so')
        if not fio.path.exists(so) then
            M.error(src.name('lib_dir'), '%s not found (run `make build`)', so)
        end
    end
    return dir
end

function M.read_user(src)
    return M.parse_user_name(src.name('user'), get_or(src, 'user', M.DEFAULT_USER))
end

-- The application user's password, given where the instance listens: required
-- (and not the development one) beyond loopback.
function M.read_password(src, listen)
    local loopback = M.is_loopback_listen(listen)
    local password = src.get('password')
    if password == nil then
        if not loopback then
            M.error(src.name('password'), 'must be set when %s (%s) '
                .. 'is not a loopback address', src.name('listen'), listen)
        end
        return M.DEV_PASSWORD
    elseif not loopback and password == M.DEV_PASSWORD then
        M.error(src.name('password'), 'the development password is refused when '
            .. '%s (%s) is not a loopback address', src.name('listen'), listen)
    end
    return tostring(password)
end

-- What guest may do (M.GUEST_ACCESS): 'none' unless the setting says 'execute'.
function M.read_guest(src)
    return M.parse_enum(src.name('guest'), get_or(src, 'guest', M.GUEST_NONE), M.GUEST_ACCESS)
end

-- Seconds a request id is remembered.
function M.read_request_ttl(src)
    return M.parse_seconds(src.name('request_ttl'),
        get_or(src, 'request_ttl', M.DEFAULT_REQUEST_TTL_S))
end

-- The replication settings:
-- {peers, read_only, user, password, sync_quorum, sync_timeout, connect_timeout,
--  admin_socket}. `app_user` is the application user's name (the replication
-- user must differ from it).
function M.read_replication(src, app_user)
    local name = src.name
    local r = {}
    local peers = src.get('peers')
    r.peers = peers and M.parse_peers(name('peers'), peers, string.format(
        'set %s and %s instead', name('replication_user'), name('replication_password'))) or {}
    r.read_only = M.parse_bool(name('read_only'), get_or(src, 'read_only', false))
    -- (A storage of a sharded store follows the members of its replica set.)
    if r.read_only and #r.peers == 0 and src.get('sharding') == nil then
        M.error(name('read_only'), 'a read-only instance needs a master to follow: set %s',
            name('peers'))
    end
    r.user = M.parse_user_name(name('replication_user'),
        get_or(src, 'replication_user', M.DEFAULT_REPLICATION_USER))
    if r.user == app_user then
        M.error(name('replication_user'), 'must differ from %s (%q)', name('user'), app_user)
    end
    r.password = src.get('replication_password')
    if r.password == nil and #r.peers > 0 then
        M.error(name('replication_password'), 'must be set when %s is set', name('peers'))
    end
    if r.password ~= nil then
        r.password = tostring(r.password)
        if not r.password:match(URI_PASSWORD_PATTERN) then
            M.error(name('replication_password'), 'may contain only letters, digits and '
                .. "-._~!$&'()*+,;= (it travels inside a peer URI)")
        end
    end
    local quorum = src.get('sync_quorum')
    r.sync_quorum = quorum and M.parse_int(name('sync_quorum'), quorum, 1, M.MAX_INSTANCES)
    local sync_timeout = src.get('sync_timeout')
    if sync_timeout ~= nil and r.sync_quorum == nil then
        M.error(name('sync_timeout'), 'only means something with %s', name('sync_quorum'))
    end
    r.sync_timeout = sync_timeout and M.parse_seconds(name('sync_timeout'), sync_timeout)
    r.connect_timeout = M.parse_seconds(name('connect_timeout'),
        get_or(src, 'connect_timeout', M.DEFAULT_REPLICATION_CONNECT_TIMEOUT_S))
    local admin = src.get('admin_socket')
    r.admin_socket = admin and M.parse_socket_path(name('admin_socket'), admin)
    return r
end

-- How many vshard buckets the data is spread over (dialogs.bucket): the same on
-- every instance of a cluster, fixed for the life of the data.
function M.read_bucket_count(src)
    local bucket = require('dialogs.bucket')
    return M.parse_int(src.name('bucket_count'),
        get_or(src, 'bucket_count', bucket.DEFAULT_COUNT), 1, bucket.MAX_COUNT)
end

-- The sharding settings (docs/operations.md, "Sharding settings"), or nil for
-- a store that is not sharded: {replicasets (dialogs.sharding's topology),
-- router (true on a router), replicaset (a storage's own), call_timeout,
-- rebalancer_max_sending}. Reads
-- the server settings `s` (listen, replication) and, on a storage, makes its
-- replica set's members its replication peers.
function M.read_sharding(src, s)
    local name = src.name
    local sharding = require('dialogs.sharding')
    local router = M.parse_bool(name('router'), get_or(src, 'router', false))
    local topology = src.get('sharding')
    if topology == nil then
        if router then
            M.error(name('router'), 'a router needs the storages: set %s', name('sharding'))
        end
        return nil
    end
    local sh = {router = router}
    sh.replicasets = sharding.parse_topology(topology, function(fmt, ...)
        M.error(name('sharding'), fmt, ...)
    end, function(address)
        return M.parse_listen(name('sharding'), address)
    end)
    sh.call_timeout = M.parse_seconds(name('router_timeout'),
        get_or(src, 'router_timeout', sharding.DEFAULT_CALL_TIMEOUT_S))
    sh.rebalancer_max_sending = M.parse_int(name('rebalancer_max_sending'),
        get_or(src, 'rebalancer_max_sending', sharding.DEFAULT_REBALANCER_MAX_SENDING),
        1, sharding.MAX_REBALANCER_MAX_SENDING)
    local r = s.replication
    if r.password == nil then
        M.error(name('replication_password'), 'must be set when %s is set (routers and '
            .. 'storages log in to the storages with it)', name('sharding'))
    end
    if #r.peers > 0 then
        M.error(name('peers'), 'must be unset when %s is set: a storage replicates with the '
            .. 'members of its replica set there, a router with nobody', name('sharding'))
    end
    if router then
        if r.read_only then
            M.error(name('read_only'), 'a router is never read-only')
        end
        local route = fio.pathjoin(s.lib_dir, 'dialogs_route.so')
        if not fio.path.exists(route) then
            M.error(name('lib_dir'), '%s not found (run `make build`)', route)
        end
        return sh
    end
    sh.replicaset = sharding.find_member(sh.replicasets, s.listen)
    if sh.replicaset == nil then
        M.error(name('listen'), '%s is no member of a replica set of %s (%s); a storage '
            .. 'listens on its own address as listed there', s.listen, name('sharding'),
            sharding.describe(sh.replicasets))
    end
    for i, member in ipairs(sh.replicaset.members) do
        r.peers[i] = member
    end
    return sh
end

-- Every setting init.lua reads, from a source (in practice env_source), in one
-- table: the server's box.cfg options, the application's, and `replication`.
function M.read(src, base_dir)
    local s = M.read_server(src, base_dir)
    s.user = M.read_user(src)
    s.password = M.read_password(src, s.listen)
    s.lib_dir = M.read_lib_dir(src, base_dir)
    s.request_ttl = M.read_request_ttl(src)
    s.bucket_count = M.read_bucket_count(src)
    s.replication = M.read_replication(src, s.user)
    s.sharding = M.read_sharding(src, s)
    s.guest = M.read_guest(src)
    if s.guest ~= M.GUEST_NONE and s.sharding ~= nil and not s.sharding.router then
        M.error(src.name('guest'), 'a storage takes calls from routers only: set it on '
            .. 'the routers, which clients call')
    end
    return s
end

-- Every DIALOGS_* variable of `env`.
function M.from_env(env, base_dir)
    return M.read(M.env_source(env), base_dir)
end

return M

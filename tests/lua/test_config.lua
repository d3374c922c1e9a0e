-- dialogs.config: every setting's default, its refusals (exact messages, naming
-- the variable), and the same rules for typed values (a YAML configuration).

local fio = require('fio')

local check = require('check')
local config = require('dialogs.config')

-- Runs fn(base_dir, lib_dir) with a fresh directory holding a built-looking
-- module (empty new_dialog.so and get_dialog.so), removed afterwards.
local function with_lib(fn)
    local base = fio.tempdir()
    local lib = fio.pathjoin(base, 'target', 'dialogs')
    fio.mktree(lib)
    for _, p in ipairs(config.library_names()) do
        local f = fio.open(fio.pathjoin(lib, p .. '.so'), {'O_CREAT', 'O_WRONLY'},
            tonumber('644', 8))
        f:close()
    end
    local ok, err = pcall(fn, base, lib)
    fio.rmtree(base)
    if not ok then
        error(err, 0)
    end
end

-- The settings from env (DIALOGS_* names, string values) with a valid module.
local function from_env(env)
    local s
    with_lib(function(base)
        s = config.from_env(env, base)
    end)
    return s
end

-- The error message config.from_env raises for env.
local function refusal(env)
    local msg
    with_lib(function(base)
        local ok, err = pcall(config.from_env, env, base)
        assert(not ok, 'accepted: ' .. require('json').encode(env))
        msg = tostring(err)
    end)
    return msg
end

local function refuses(env, message)
    check.equal(refusal(env), message, 'refusal of ' .. require('json').encode(env))
end

local REPL = {DIALOGS_REPLICATION = '127.0.0.1:3302', DIALOGS_REPLICATION_PASSWORD = 'pw'}

local function with(extra)
    local t = {}
    for k, v in pairs(REPL) do
        t[k] = v
    end
    for k, v in pairs(extra) do
        t[k] = v
    end
    return t
end

return {
    {'defaults of an empty environment', function()
        with_lib(function(base, lib)
            local s = config.from_env({}, base)
            check.equal(s.listen, '127.0.0.1:3301', 'listen')
            check.equal(s.data_dir, fio.pathjoin(base, 'data'), 'data_dir')
            check.equal(s.lib_dir, lib, 'lib_dir')
            check.equal(s.user, 'dialogs', 'user')
            check.equal(s.password, 'dialogs', 'password (loopback development default)')
            check.equal(s.memtx_memory, 1024 * 1024 * 1024, 'memtx_memory')
            check.equal(s.wal_mode, 'write', 'wal_mode')
            check.equal(s.log_level, 5, 'log_level')
            check.equal(s.request_ttl, 7 * 24 * 3600, 'request_ttl')
            check.equal(s.guest, 'none', 'guest')
            check.equal(s.replication, {peers = {}, read_only = false, user = 'replicator',
                connect_timeout = 30}, 'replication')
        end)
    end},

    {'empty strings count as unset', function()
        local s = from_env({DIALOGS_LISTEN = '', DIALOGS_USER = '', DIALOGS_PASSWORD = '',
            DIALOGS_REQUEST_TTL = '', DIALOGS_SYNC_QUORUM = ''})
        check.equal({s.listen, s.user, s.password, s.request_ttl, s.replication.sync_quorum},
            {'127.0.0.1:3301', 'dialogs', 'dialogs', 604800, nil}, 'settings')
    end},

    {'every variable set and in force', function()
        local s = from_env({
            DIALOGS_LISTEN = 'localhost:4000', DIALOGS_DATA_DIR = '/srv/dialogs',
            DIALOGS_USER = 'chat', DIALOGS_PASSWORD = 'pw', DIALOGS_MEMTX_MEMORY = '33554432',
            DIALOGS_WAL_MODE = 'fsync', DIALOGS_LOG_LEVEL = '4', DIALOGS_REQUEST_TTL = '2.5',
            DIALOGS_REPLICATION = '127.0.0.1:1, unix/:/tmp/x.sock',
            DIALOGS_READ_ONLY = 'true', DIALOGS_REPLICATION_USER = 'repl',
            DIALOGS_REPLICATION_PASSWORD = "a-b.c_d~e!$&'()*+,;=", DIALOGS_SYNC_QUORUM = '2',
            DIALOGS_SYNC_TIMEOUT = '0.5', DIALOGS_REPLICATION_CONNECT_TIMEOUT = '3',
            DIALOGS_ADMIN_SOCKET = '/tmp/dialogs-admin.sock',
        })
        check.equal({s.listen, s.data_dir, s.user, s.password, s.memtx_memory, s.wal_mode,
            s.log_level, s.request_ttl}, {'localhost:4000', '/srv/dialogs', 'chat', 'pw',
            32 * 1024 * 1024, 'fsync', 4, 2.5}, 'server and application settings')
        check.equal(s.replication, {peers = {'127.0.0.1:1', 'unix/:/tmp/x.sock'},
            read_only = true, user = 'repl', password = "a-b.c_d~e!$&'()*+,;=",
            sync_quorum = 2, sync_timeout = 0.5, connect_timeout = 3,
            admin_socket = '/tmp/dialogs-admin.sock'}, 'replication')
    end},

    {'listen forms', function()
        for _, v in ipairs({'127.0.0.1:1', '[::1]:3301', 'unix/:/tmp/s', '/tmp/s', '3301',
                'host.example:65535'}) do
            check.equal(config.parse_listen('L', v), v, v)
        end
        for _, v in ipairs({'127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', 'x:y', '0'}) do
            check.raises(string.format('dialogs: L: expected HOST:PORT (port 1..65535) or '
                .. 'unix/:PATH, got %q', v), config.parse_listen, 'L', v)
        end
    end},

    {'loopback detection', function()
        local cases = {
            ['127.0.0.1:3301'] = true, ['127.1.2.3:1'] = true, ['localhost:1'] = true,
            ['[::1]:1'] = true, ['unix/:/tmp/s'] = true, ['/tmp/s'] = true,
            ['u:p@127.0.0.1:1'] = true, ['0.0.0.0:1'] = false, ['[::]:1'] = false,
            ['192.0.2.1:1'] = false, ['3301'] = false, ['128.0.0.1:1'] = false,
        }
        for listen, want in pairs(cases) do
            check.equal(config.is_loopback_listen(listen), want, listen)
        end
    end},

    {'a password is required beyond loopback, and not the development one', function()
        refuses({DIALOGS_LISTEN = '0.0.0.0:3301'}, 'dialogs: DIALOGS_PASSWORD: must be set '
            .. 'when DIALOGS_LISTEN (0.0.0.0:3301) is not a loopback address')
        refuses({DIALOGS_LISTEN = '3301', DIALOGS_PASSWORD = 'dialogs'}, 'dialogs: '
            .. 'DIALOGS_PASSWORD: the development password is refused when DIALOGS_LISTEN '
            .. '(3301) is not a loopback address')
        check.equal(from_env({DIALOGS_LISTEN = '0.0.0.0:3301', DIALOGS_PASSWORD = 's3'})
            .password, 's3', 'password off loopback')
    end},

    {'server and application refusals name the variable', function()
        refuses({DIALOGS_MEMTX_MEMORY = 'lots'},
            'dialogs: DIALOGS_MEMTX_MEMORY: expected a whole number of bytes, got "lots"')
        refuses({DIALOGS_MEMTX_MEMORY = '33554432.5'},
            'dialogs: DIALOGS_MEMTX_MEMORY: expected a whole number of bytes, got "33554432.5"')
        refuses({DIALOGS_MEMTX_MEMORY = '1024'},
            'dialogs: DIALOGS_MEMTX_MEMORY: must be at least 33554432 bytes, got 1024')
        refuses({DIALOGS_WAL_MODE = 'none'},
            'dialogs: DIALOGS_WAL_MODE: expected one of write, fsync, got "none"')
        refuses({DIALOGS_LOG_LEVEL = '9'},
            'dialogs: DIALOGS_LOG_LEVEL: expected one of 1, 2, 3, 4, 5, 6, 7, got "9"')
        for _, u in ipairs({'guest', 'admin', 'no spaces', '1abc', 'a-b'}) do
            refuses({DIALOGS_USER = u}, string.format('dialogs: DIALOGS_USER: expected a '
                .. 'user name of letters, digits and _ (not guest or admin), got %q', u))
        end
        for _, ttl in ipairs({'0', '-1', 'week', 'inf', 'nan'}) do
            refuses({DIALOGS_REQUEST_TTL = ttl}, string.format('dialogs: DIALOGS_REQUEST_TTL: '
                .. 'expected a positive number of seconds, got %q', ttl))
        end
    end},

    {'guest: none unless DIALOGS_GUEST says execute; nothing else accepted', function()
        check.equal(from_env({DIALOGS_GUEST = 'none'}).guest, 'none', 'none')
        check.equal(from_env({DIALOGS_GUEST = ''}).guest, 'none', 'empty')
        check.equal(from_env({DIALOGS_GUEST = 'execute'}).guest, 'execute', 'execute')
        for _, g in ipairs({'yes', 'true', 'read', 'EXECUTE', 'execute,read', ' execute'}) do
            refuses({DIALOGS_GUEST = g}, string.format('dialogs: DIALOGS_GUEST: expected '
                .. 'one of none, execute, got %q', g))
        end
    end},

    {'a library directory without the procedures is refused', function()
        with_lib(function(base)
            local missing = fio.pathjoin(base, 'nowhere')
            check.raises(string.format('dialogs: DIALOGS_LIB_DIR: %s not found (run `make '
                .. 'build`)', fio.pathjoin(missing, 'new_dialog.so')), config.from_env,
                {DIALOGS_LIB_DIR = missing}, base)
        end)
    end},

    {'replication refusals name the variable', function()
        refuses({DIALOGS_REPLICATION = '127.0.0.1:3302'}, 'dialogs: '
            .. 'DIALOGS_REPLICATION_PASSWORD: must be set when DIALOGS_REPLICATION is set')
        refuses(with({DIALOGS_REPLICATION = '127.0.0.1:3302,,'}), 'dialogs: DIALOGS_REPLICATION: '
            .. 'empty entry in "127.0.0.1:3302,," (expected HOST:PORT,HOST:PORT,...)')
        refuses(with({DIALOGS_REPLICATION = 'u:secret@127.0.0.1:3302'}), 'dialogs: '
            .. 'DIALOGS_REPLICATION: peer "...@127.0.0.1:3302" carries credentials; set '
            .. 'DIALOGS_REPLICATION_USER and DIALOGS_REPLICATION_PASSWORD instead')
        refuses(with({DIALOGS_REPLICATION = '127.0.0.1:x'}), 'dialogs: DIALOGS_REPLICATION: '
            .. 'expected HOST:PORT (port 1..65535) or unix/:PATH, got "127.0.0.1:x"')
        local many = {}
        for i = 1, 33 do
            many[i] = '127.0.0.1:' .. (4000 + i)
        end
        refuses(with({DIALOGS_REPLICATION = table.concat(many, ',')}),
            'dialogs: DIALOGS_REPLICATION: at most 32 peers, got 33')
        refuses({DIALOGS_READ_ONLY = 'true'}, 'dialogs: DIALOGS_READ_ONLY: a read-only '
            .. 'instance needs a master to follow: set DIALOGS_REPLICATION')
        refuses(with({DIALOGS_READ_ONLY = 'yes'}),
            'dialogs: DIALOGS_READ_ONLY: expected true or false, got "yes"')
        refuses(with({DIALOGS_REPLICATION_USER = 'dialogs'}), 'dialogs: '
            .. 'DIALOGS_REPLICATION_USER: must differ from DIALOGS_USER ("dialogs")')
        refuses(with({DIALOGS_REPLICATION_PASSWORD = 'a@b'}), 'dialogs: '
            .. 'DIALOGS_REPLICATION_PASSWORD: may contain only letters, digits and '
            .. "-._~!$&'()*+,;= (it travels inside a peer URI)")
        for _, q in ipairs({'0', '33', 'two', '1.5'}) do
            refuses(with({DIALOGS_SYNC_QUORUM = q}), string.format('dialogs: '
                .. 'DIALOGS_SYNC_QUORUM: expected a whole number 1..32, got %q', q))
        end
        refuses(with({DIALOGS_SYNC_TIMEOUT = '5'}), 'dialogs: DIALOGS_SYNC_TIMEOUT: only '
            .. 'means something with DIALOGS_SYNC_QUORUM')
        refuses(with({DIALOGS_SYNC_QUORUM = '2', DIALOGS_SYNC_TIMEOUT = '-1'}), 'dialogs: '
            .. 'DIALOGS_SYNC_TIMEOUT: expected a positive number of seconds, got "-1"')
        refuses(with({DIALOGS_REPLICATION_CONNECT_TIMEOUT = '0'}), 'dialogs: '
            .. 'DIALOGS_REPLICATION_CONNECT_TIMEOUT: expected a positive number of seconds, '
            .. 'got "0"')
        refuses({DIALOGS_ADMIN_SOCKET = '/nonexistent-dir/admin.sock'}, 'dialogs: '
            .. 'DIALOGS_ADMIN_SOCKET: directory "/nonexistent-dir" does not exist')
        local long = '/tmp/' .. string.rep('x', 120)
        refuses({DIALOGS_ADMIN_SOCKET = long}, string.format('dialogs: DIALOGS_ADMIN_SOCKET: '
            .. 'unix socket path longer than 107 bytes: %q', long))
    end},

    {'a standalone master may set the replication password alone', function()
        local s = from_env({DIALOGS_REPLICATION_PASSWORD = 'pw'})
        check.equal(s.replication.peers, {}, 'peers')
        check.equal(s.replication.password, 'pw', 'password')
    end},

    {'typed values and other names (a role configuration)', function()
        local values = {user = 'chat', request_ttl = 60, sync_quorum = 2, sync_timeout = 1,
            read_only = false, peers = {'127.0.0.1:1', '127.0.0.1:2'},
            replication_password = 'pw'}
        local src = config.source(function(k) return values[k] end,
            function(k) return 'roles_cfg.dialogs.' .. k end)
        check.equal(config.read_user(src), 'chat', 'user')
        check.equal(config.read_request_ttl(src), 60, 'request_ttl')
        local r = config.read_replication(src, 'chat')
        check.equal({r.peers, r.read_only, r.sync_quorum, r.sync_timeout},
            {{'127.0.0.1:1', '127.0.0.1:2'}, false, 2, 1}, 'replication')
        values.sync_quorum = 2.5
        check.raises('dialogs: roles_cfg.dialogs.sync_quorum: expected a whole number 1..32, '
            .. 'got "2.5"', config.read_replication, src, 'chat')
        values.sync_quorum, values.read_only = 2, 'maybe'
        check.raises('dialogs: roles_cfg.dialogs.read_only: expected true or false, got '
            .. '"maybe"', config.read_replication, src, 'chat')
        values.user = 42
        check.raises('dialogs: roles_cfg.dialogs.user: expected a user name of letters, '
            .. 'digits and _ (not guest or admin), got "42"', config.read_user, src)
        values.request_ttl = -5
        check.raises('dialogs: roles_cfg.dialogs.request_ttl: expected a positive number of '
            .. 'seconds, got "-5"', config.read_request_ttl, src)
    end},
}

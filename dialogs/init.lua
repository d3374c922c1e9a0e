-- dialogs: the store as a Tarantool 3 role.
--
--   roles: [dialogs]
--   roles_cfg:
--     dialogs:
--       user: dialogs          # the application user (declared under credentials)
--       synchronous: true      # message writes wait for replication.synchro_quorum
--       request_ttl: 604800    # seconds a new_dialog request_id is remembered
--       lib_dir: target/dialogs  # where new_dialog.so / get_dialog.so are
--       guest: none            # or execute: guest (no password) may call the two
--                              # procedures, and nothing else (docs/operations.md, "Guest access")
--
-- Tarantool loads a role by `require(name)`: this file is found as `dialogs`
-- from a checkout (the working directory, or LUA_PATH) and from a rock. The work
-- itself is done by the same modules init.lua (the 2.x entry) uses; this file
-- only reads roles_cfg and decides when to call them.
--
-- The configuration's `credentials` section owns the users: the application user
-- (execute on the client procedures only) and the replication user. The role checks
-- that the application user is declared that way and never creates a user itself.
-- guest is the exception: what it may do is the store's choice (roles_cfg.dialogs.
-- guest), granted and revoked by the role, so that turning it off takes it back
-- (credentials keep grants of a user they no longer list); credentials that give
-- guest anything are refused.
--
-- Nothing here runs at load time, and nothing needs Tarantool 3 to load: the
-- settings are unit-tested on any server (tests/lua/test_role.lua).

local fio = require('fio')
local log = require('log')

local access = require('dialogs.access')
local background = require('dialogs.background')
local config = require('dialogs.config')
local replication = require('dialogs.replication')
local requests = require('dialogs.requests')
local schema = require('dialogs.schema')
local setup = require('dialogs.setup')

local M = {}

-- The role's name, as `roles:` and `roles_cfg:` spell it.
M.NAME = 'dialogs'

-- Every key roles_cfg.dialogs may hold.
M.KEYS = {'guest', 'lib_dir', 'request_ttl', 'synchronous', 'user'}


-- The directory above this module's: the repository root in a checkout (where
-- `make build` puts the library in target/dialogs), the rocks tree's Lua
-- directory in an installed rock (which has no target/).
local BASE_DIR = fio.dirname(fio.dirname(fio.abspath(
    (debug.getinfo(1, 'S').source:gsub('^@', '')))))

-- 'roles_cfg.dialogs.<key>': how messages name a setting.
function M.setting_name(key)
    return 'roles_cfg.' .. M.NAME .. '.' .. key
end

local function procedures_text()
    return config.names_text(config.PROCEDURES)
end

-- Where Tarantool itself would find `name`.so for box.schema.func.create:
-- package.search (its module searchers: package.cpath, the working directory,
-- .rocks) where it exists, else package.cpath.
local function search_c_module(name)
    local search = rawget(package, 'search')
    if type(search) == 'function' then
        local ok, path = pcall(search, name)
        if ok and type(path) == 'string' and path:match('%.so$') then
            return path
        end
    end
    return package.searchpath(name, package.cpath)
end

-- The library directory: the one named by lib_dir (checked to hold every
-- procedure), else target/dialogs of the checkout when it holds them, else nil
-- when the procedures are already on Tarantool's search path (an installed
-- rock). Anything else is refused, naming lib_dir.
local function read_lib_dir(src, base_dir)
    if src.get('lib_dir') ~= nil then
        return config.read_lib_dir(src, base_dir)
    end
    local checkout = fio.pathjoin(base_dir, 'target', 'dialogs')
    local missing
    for _, proc in ipairs(config.library_names()) do
        if not fio.path.exists(fio.pathjoin(checkout, proc .. '.so')) then
            missing = proc
        end
    end
    if missing == nil then
        return checkout
    end
    for _, proc in ipairs(config.library_names()) do
        if search_c_module(proc) == nil then
            config.error(src.name('lib_dir'), '%s.so is neither in %s nor on package.cpath '
                .. '(run `make build`, install the rock, or set %s)', proc, checkout,
                src.name('lib_dir'))
        end
    end
    return nil
end

-- The role's settings from roles_cfg.dialogs (nil: every default), validated:
-- {user, synchronous, request_ttl, lib_dir (nil: on package.cpath already), guest}.
-- A bad value is refused with a message naming roles_cfg.dialogs.<key>, by the
-- parsers init.lua uses for the same settings. `base_dir` anchors the checkout
-- default of lib_dir (default: the repository this file is in).
function M.settings(cfg, base_dir)
    base_dir = base_dir or BASE_DIR
    if cfg == nil then
        cfg = {}
    end
    if type(cfg) ~= 'table' then
        config.error('roles_cfg.' .. M.NAME, 'expected a map of settings (%s), got %s',
            table.concat(M.KEYS, ', '), type(cfg))
    end
    local known = {}
    for _, k in ipairs(M.KEYS) do
        known[k] = true
    end
    for k in pairs(cfg) do
        if not known[k] then
            config.error(M.setting_name(tostring(k)), 'unknown setting (known: %s)',
                table.concat(M.KEYS, ', '))
        end
    end
    local src = config.source(function(key) return cfg[key] end, M.setting_name)
    local s = {}
    s.user = config.read_user(src)
    local sync = src.get('synchronous')
    s.synchronous = sync ~= nil and config.parse_bool(src.name('synchronous'), sync) or false
    s.request_ttl = config.read_request_ttl(src)
    s.lib_dir = read_lib_dir(src, base_dir)
    s.guest = config.read_guest(src)
    return s
end

-- A user's privileges that reach past executing the procedures: each entry of
-- credentials.users.<user>.privileges may grant `execute` on some of them, and
-- nothing else.
local function check_privilege(entry, where, granted)
    for key, value in pairs(entry) do
        if key == 'permissions' then
            for _, p in ipairs(value) do
                if p ~= 'execute' then
                    config.error(where .. '.permissions', 'the application user may only '
                        .. 'execute %s, not %s', procedures_text(), tostring(p))
                end
            end
        elseif key == 'functions' then
            for _, f in ipairs(value) do
                local known = false
                for _, proc in ipairs(config.PROCEDURES) do
                    known = known or f == proc
                end
                if not known then
                    config.error(where .. '.functions', 'the application user may only '
                        .. 'execute %s, not %s', procedures_text(), tostring(f))
                end
                granted[f] = true
            end
        elseif value ~= false and not (type(value) == 'table' and next(value) == nil) then
            config.error(where .. '.' .. tostring(key), 'the application user may only '
                .. 'execute %s; this grants more', procedures_text())
        end
    end
end

-- Checks the role's settings `s` against the rest of the cluster configuration,
-- read by `get(path)` (config:get on Tarantool 3): the application user is
-- declared under credentials.users, may execute every client procedure and nothing
-- else, and has a password of its own wherever the instance listens beyond
-- loopback (the rule init.lua applies to DIALOGS_PASSWORD). Refusals name the
-- configuration key; no message shows a password.
function M.check_cluster_config(s, get)
    local users = get('credentials.users') or {}
    local user = users[s.user]
    if user == nil then
        config.error(M.setting_name('user'), 'user %q is not declared under '
            .. 'credentials.users (declare it there with execute on %s)', s.user,
            procedures_text())
    end
    local base = 'credentials.users.' .. s.user
    if user.roles ~= nil and next(user.roles) ~= nil then
        config.error(base .. '.roles', 'the application user takes no roles: it may '
            .. 'only execute %s', procedures_text())
    end
    local granted = {}
    for i, entry in ipairs(user.privileges or {}) do
        check_privilege(entry, string.format('%s.privileges[%d]', base, i), granted)
    end
    for _, proc in ipairs(config.PROCEDURES) do
        if not granted[proc] then
            config.error(base .. '.privileges', 'no execute on %s: the application user '
                .. 'could not call it', proc)
        end
    end
    M.check_guest_credentials(get, M.setting_name('guest'))
    local src = config.source(function(key)
        if key == 'password' then
            return user.password
        end
    end, function(key)
        return key == 'password' and base .. '.password' or 'iproto.listen'
    end)
    for _, listen in ipairs(get('iproto.listen') or {}) do
        if type(listen) == 'table' and type(listen.uri) == 'string' then
            config.read_password(src, listen.uri)
        end
    end
end

-- Refuses credentials that give guest anything (credentials.users.guest with
-- privileges, or roles beyond Tarantool's default 'public'): what guest may do on
-- the store is `setting` (roles_cfg.<role>.guest), read by `get(path)`.
function M.check_guest_credentials(get, setting)
    local guest = (get('credentials.users') or {}).guest
    if guest == nil then
        return
    end
    local hint = string.format('what guest may do is %s (execute: call %s, and nothing '
        .. 'else)', setting, config.names_text(config.GUEST_PROCEDURES))
    if guest.privileges ~= nil and next(guest.privileges) ~= nil then
        config.error('credentials.users.guest.privileges', 'guest takes no privileges '
            .. 'here: %s', hint)
    end
    for _, r in ipairs(guest.roles or {}) do
        if r ~= 'public' then
            config.error('credentials.users.guest.roles', 'guest takes no role but '
                .. 'public here (got %s): %s', tostring(r), hint)
        end
    end
end

-- The cluster configuration of a running Tarantool 3 instance, if there is one
-- (a plain script on Tarantool 3 has the module but no configuration).
local function cluster_get()
    local ok, cfg = pcall(require, 'config')
    if not ok or type(cfg) ~= 'table' or type(cfg.get) ~= 'function'
            or not pcall(cfg.get, cfg, 'credentials') then
        return nil
    end
    return function(path)
        return cfg:get(path)
    end
end

-- Adds `dir` to the front of package.cpath once (box.schema.func.create looks
-- the procedures up there, on every instance: a replica calls the functions it
-- received by replication).
local function use_lib_dir(dir)
    if dir == nil then
        return
    end
    local entry = fio.pathjoin(dir, '?.so')
    for item in package.cpath:gmatch('[^;]+') do
        if item == entry then
            return
        end
    end
    package.cpath = entry .. ';' .. package.cpath
end

-- The replication settings the shared modules take, from the role's settings
-- and the server's state: the quorum is replication.synchro_quorum's value.
local function replication_settings(s)
    local quorum
    if s.synchronous then
        local ok, q = pcall(function() return box.info.synchro.quorum end)
        quorum = ok and q or box.cfg.replication_synchro_quorum
    end
    return {peers = {}, read_only = box.cfg.read_only, sync_quorum = quorum}
end

-- Everything only the writable instance does: init.lua's set-up sequence
-- (dialogs.setup), with the users left to `credentials` (no password given: the
-- application user, once declared, is only granted execute on the procedures)
-- and replication configured by the file (the replication user is not touched).
-- Where the configuration elects no leader (failover manual or off) a
-- synchronous store's writable instance also takes the synchronous queue; under
-- election the elected leader owns it already. Idempotent: running it again (a
-- reload, a new leader) changes nothing that is already right.
local function set_up_writable(s)
    local r = replication_settings(s)
    setup.writable_instance({user = s.user, replication = r, guest = s.guest,
        guest_setting = M.setting_name('guest')})
    if (box.cfg.election_mode or 'off') == 'off' then
        replication.take_queue(r)
    end
    log.info('dialogs: set up as the writable instance: schema version %d, procedures %s, '
        .. 'application user %q', schema.version(), procedures_text(), s.user)
end

-- The role's own fiber (dialogs.background keeps one of each name per
-- instance, across reloads of this module).
local FIBER = 'role'

-- roles: refuses a bad roles_cfg.dialogs (and, on a running Tarantool 3
-- instance, credentials that do not fit it), naming the key. Changes nothing.
function M.validate(cfg)
    local s = M.settings(cfg)
    local get = cluster_get()
    if get ~= nil then
        M.check_cluster_config(s, get)
    end
end

-- roles: puts the library on package.cpath; on the writable instance registers
-- the procedures and applies the migrations now (an error fails the apply);
-- on any instance starts the fiber that does it whenever the instance becomes
-- writable later. A read-only instance never writes. Reapplying replaces the
-- fiber and repeats only what is missing.
function M.apply(cfg)
    local s = M.settings(cfg)
    use_lib_dir(s.lib_dir)
    background.stop(FIBER)
    local done = false
    if not box.info.ro then
        set_up_writable(s)
        done = true
    else
        log.info('dialogs: read-only for now: the store is set up by the writable '
            .. 'instance, and here as soon as this one becomes writable')
    end
    background.start(FIBER, background.whenever_writable, 'the writable instance',
        set_up_writable, s, done)
    access.log_guest_access(s.guest, M.setting_name('guest'))
    -- Request ids expire on whichever instance is writable (the pruner waits
    -- for that itself).
    requests.start_expiry(s.request_ttl)
end

-- roles: stops the role's fibers (its own, the request-id pruner, a queue
-- taker). The spaces, their data and the functions stay (another
-- configuration, or init.lua, may serve them again).
function M.stop()
    background.stop(FIBER)
    requests.stop_expiry()
    replication.stop_take_queue()
end

-- Shared with the sharded roles (dialogs.storage, dialogs.router).
M.read_lib_dir = read_lib_dir
M.use_lib_dir = use_lib_dir
M.cluster_get = cluster_get

return M

-- dialogs.router: this instance as a vshard router of a sharded store: the
-- client functions registered, the router's own database set up, vshard's router
-- configured and its buckets bootstrapped, a new topology taken, and the
-- Tarantool 3 role. What a client's call does on its way through is
-- dialogs.routing's.

local fiber = require('fiber')
local log = require('log')
local msgpack = require('msgpack')

local access = require('dialogs.access')
local capabilities = require('dialogs.capabilities')
local config = require('dialogs.config')
local routing = require('dialogs.routing')
local sharding = require('dialogs.sharding')

local M = {}

-- The call path's state (dialogs.routing), filled in by serve().
local state = routing.state
-- The settings start() ran with.
local started = nil

-- The client functions (dialogs.routing), published as globals by serve().
M.new_dialog = routing.new_dialog
M.get_dialog = routing.get_dialog
M.list_dialogs = routing.list_dialogs
M.mark_read = routing.mark_read
M.UNAVAILABLE, M.MOVING, M.SHARDING = routing.UNAVAILABLE, routing.MOVING, routing.SHARDING

-- The check function (not granted to anyone: the router's functions run as their
-- owner) and the two client functions as setuid Lua functions. As admin.
--
-- Where a function can take its arguments undecoded (its box.func object says
-- whether it does, and msgpack objects exist), the client functions are defined
-- so (then serve() sets state.raw): the router passes the client's bytes on.
function M.register_functions()
    box.schema.func.create(routing.ROUTE_FUNCTION, {language = 'C', if_not_exists = true})
    local raw = msgpack.is_object ~= nil and box.func[routing.ROUTE_FUNCTION].takes_raw_args ~= nil
    for _, name in ipairs(config.PROCEDURES) do
        local f = box.func[name]
        if f ~= nil and (f.language ~= 'LUA' or not f.setuid
                         or (raw and f.takes_raw_args ~= true)) then
            log.warn('dialogs: function %s was not a setuid Lua function%s: redefining it',
                name, raw and ' taking raw arguments' or '')
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {setuid = true, if_not_exists = true,
                                      takes_raw_args = raw or nil})
    end
end

-- The router's own database (2.x): the functions, the application user with
-- execute on the client functions and nothing else, guest the same by choice
-- (s.guest, named s.guest_setting). Writable (every router is), as admin.
function M.setup(s, user_setting)
    M.register_functions()
    access.setup_app_user(s, user_setting)
    access.set_guest_access(s.guest or config.GUEST_NONE, s.guest_setting or 'guest')
    access.restrict_public_role()
end

-- How often the router looks again while it waits for the storages, seconds.
local POLL_S = 0.2

-- Reads the bucket count every replica set keeps; if one keeps another count
-- than this router's, logs it and stops there: the router serves no call and
-- creates no bucket. Then, until the cluster has its buckets, tries to create
-- them (once every storage answers; a cluster that has buckets anywhere is left
-- alone); then waits until vshard's discovery knows where every bucket is. Until
-- then a call for a bucket not yet known makes vshard look for it, which can
-- take seconds per replica set that does not answer.
local function bootstrap_loop()
    local vshard = require('vshard')
    local warned = false
    while true do
        local count, all = routing.read_cluster_count(false, routing.COUNT_TIMEOUT_S)
        if count ~= nil and (all or count ~= state.bucket_count) then
            routing.learn_cluster_count(count)
            if count ~= state.bucket_count then
                return
            end
            break
        end
        if not warned then
            log.warn('dialogs: the router waits for every replica set to tell its bucket count')
            warned = true
        end
        fiber.sleep(POLL_S)
    end
    warned = false
    while true do
        local ok, done, err = pcall(vshard.router.bootstrap,
            {if_not_bootstrapped = true, timeout = 5})
        if ok and done then
            break
        end
        if not warned then
            log.warn('dialogs: bucket bootstrap waits for every storage: %s',
                tostring(ok and err or done))
            warned = true
        end
        fiber.sleep(POLL_S)
    end
    while vshard.router.info().bucket.unknown > 0 do
        fiber.sleep(POLL_S)
    end
    log.info('dialogs: the cluster\'s buckets are in place (%d known)', state.bucket_count)
end

-- Serves clients through vshard's (configured) static router: `bucket_count`,
-- `call_timeout` seconds per call. Publishes the client functions and creates
-- the buckets once every storage answers.
local function serve(bucket_count, call_timeout)
    state.bucket_count = bucket_count
    state.call_timeout = call_timeout
    state.wrap_id = not capabilities.c_results_one_each()
    -- As the client functions are defined (register_functions()).
    local f = box.func[config.PROCEDURES[1]]
    state.raw = f ~= nil and f.takes_raw_args == true
    local vshard = require('vshard')
    rawset(_G, 'vshard', vshard)
    state.callrw = vshard.router.callrw
    state.callbro = vshard.router.callbro
    state.route = vshard.router.route
    state.routeall = vshard.router.routeall
    state.cluster_count = nil
    for _, name in ipairs(config.PROCEDURES) do
        rawset(_G, name, routing.CLIENT_FUNCTIONS[name])
    end
    require('dialogs.background').start('router_bootstrap', bootstrap_loop)
end

-- Starts vshard's router (box is configured) and publishes the client functions.
function M.start(s)
    started = s
    local r = s.replication
    require('vshard').router.cfg(sharding.vshard_cfg(s.sharding.replicasets, r.user,
        r.password, s.bucket_count))
    serve(s.bucket_count, s.sharding.call_timeout)
    log.info('dialogs: vshard router over %s (%d buckets)',
        sharding.describe(s.sharding.replicasets), s.bucket_count)
end

-- A new topology for a running router (docs/sharding.md, "Adding a replica set"), in
-- DIALOGS_SHARDING's form; run as admin:
-- require('dialogs.router').reconfigure('s1=...;s2=...').
function M.reconfigure(topology)
    local s = assert(started, 'dialogs: this instance is not a started router')
    local replicasets = sharding.parse_topology(topology, function(fmt, ...)
        error(string.format('dialogs: topology: ' .. fmt, ...), 0)
    end, function(address)
        return address
    end)
    local r = s.replication
    require('vshard').router.cfg(sharding.vshard_cfg(replicasets, r.user, r.password,
        s.bucket_count))
    s.sharding.replicasets = replicasets
    log.info('dialogs: router reconfigured: cluster %s', sharding.describe(replicasets))
end

-- The inbox's recount over the whole cluster (dialogs.recount_sharded), from an
-- admin console of a serving router: waits for the outboxes to drain (up to
-- opts.timeout seconds), compares every entry and total with the messages, and
-- with opts.repair fixes what drifted. Returns the report.
function M.recount(opts)
    return require('dialogs.recount_sharded').run(require('vshard').router.static, opts)
end

------------------------------------------------------------------------------
-- Tarantool 3: the role `dialogs.router` (docs/sharding.md, "Sharding on Tarantool 3").
-- The configuration's sharding section makes the instance a vshard router
-- (`sharding: {roles: [router]}`) and its credentials declare the application
-- user with execute on new_dialog and get_dialog; this role defines those two
-- functions and the check they run.
--
--   roles: [dialogs.router]
--   roles_cfg:
--     dialogs.router:
--       lib_dir: target/dialogs   # where dialogs_route.so is (default as dialogs)
--       call_timeout: 2           # seconds per call, retries included
--       guest: none               # or execute: guest (no password) may call the
--                                 # two functions, and nothing else
------------------------------------------------------------------------------

M.ROLE = 'dialogs.router'
M.ROLE_KEYS = {'lib_dir', 'call_timeout', 'guest'}

local function role_settings(cfg)
    local s = sharding.role_settings(M.ROLE, cfg, M.ROLE_KEYS)
    s.call_timeout = config.parse_seconds(s.src.name('call_timeout'),
        s.src.get('call_timeout') or sharding.DEFAULT_CALL_TIMEOUT_S)
    s.bucket_count = sharding.config_bucket_count()
    s.guest = config.read_guest(s.src)
    return s
end

-- roles: refuses bad roles_cfg['dialogs.router'] (and, on a running Tarantool 3
-- instance, credentials that give guest anything), naming the key.
function M.validate(cfg)
    local s = role_settings(cfg)
    local get = require('dialogs').cluster_get()
    if get ~= nil then
        require('dialogs').check_guest_credentials(get, s.src.name('guest'))
    end
end

function M.apply(cfg)
    local s = role_settings(cfg)
    require('dialogs').use_lib_dir(s.lib_dir)
    box.session.su('admin', function()
        M.register_functions()
        access.set_guest_access(s.guest, s.src.name('guest'))
        access.restrict_public_role()
    end)
    serve(s.bucket_count, s.call_timeout)
    access.log_guest_access(s.guest, s.src.name('guest'))
    log.info('dialogs: router of the sharded store (%d buckets)', s.bucket_count)
end

-- roles: stops the bootstrap fiber and withdraws the client functions.
function M.stop()
    require('dialogs.background').stop('router_bootstrap')
    for _, name in ipairs(config.PROCEDURES) do
        rawset(_G, name, nil)
    end
end

return M

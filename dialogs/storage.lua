-- dialogs.storage: this instance as a vshard storage of a sharded store.
--
-- A storage is a replica set of the ordinary store (master + replicas, the same
-- schema, the same native procedures), plus vshard's own: the _bucket space, the
-- bucket refs that keep a bucket in place while a call uses it, the rebalancer.
-- Clients never call a storage: routers do, as the replication user, through
-- vshard.storage.call, which takes the bucket's ref and then calls one of the
-- functions below (docs/sharding.md, "How a call travels").
--
-- Those functions take the bucket the router routed the call by and the client's
-- arguments, (bucket_id, {args}), and run the storage's native entries
-- (src/storage_read.rs, src/storage_write.rs) with them: a dialog is read and
-- written only under its own bucket, whichever bucket a router names. They wrap
-- the entries for the trip back through vshard, which keeps only one value of a
-- call and turns a raised error into 32 (PROC_LUA): each returns one value (the
-- id, or the page as one array), and an entry's error as a second value
-- {type = 'dialogs', code, message}, which the router raises again.

local log = require('log')

local sharding = require('dialogs.sharding')

local M = {}

-- The settings start() ran with (reconfigure() changes their topology).
local settings = nil

-- The name routers call, per procedure (and per step of mark_read, and the
-- outbox's delivery, which storages call on each other).
M.FUNCTIONS = {
    new_dialog = 'dialogs_storage.new_dialog',
    get_dialog = 'dialogs_storage.get_dialog',
    list_dialogs = 'dialogs_storage.list_dialogs',
    read_count = 'dialogs_storage.read_count',
    mark_read_apply = 'dialogs_storage.mark_read_apply',
    inbox_apply = 'dialogs_storage.inbox_apply',
    -- The sharded recount's repair of a bucket's inbox rows (dialogs.recount_sharded).
    inbox_repair = 'dialogs_storage.inbox_repair',
}

-- The native read entry routers call directly for get_dialog (src/storage_read.rs):
-- get_dialog's page, with the bucket checked in the same call, or error
-- READ_REFUSED when this instance may not read the bucket now (then the router
-- takes the ordinary way, FUNCTIONS.get_dialog through vshard.storage.call).
M.READ_FUNCTION = 'dialogs_storage_get'
M.READ_REFUSED = 1012
-- Its write twin for new_dialog (src/storage_write.rs): the bucket checked inside
-- the write's transaction; the same refusal (WRITE_REFUSED), nothing written.
M.WRITE_FUNCTION = 'dialogs_storage_new'
M.WRITE_REFUSED = M.READ_REFUSED
-- The inbox's native entries on a storage (src/inbox/storage.rs, docs/inbox.md,
-- "On a sharded store"): list_dialogs in the user's bucket, the deliveries of
-- the outbox drainer, and mark_read's count (dialog's bucket) and write (user's
-- bucket). Each checks its bucket like the two above (WRITE_REFUSED).
-- inbox_apply_many is the drainer's delivery of a round to a replica set's
-- master, called directly (no vshard bucket reference: it checks each group's
-- bucket inside its one transaction and skips, and lists, those it may not write).
M.INBOX_FUNCTIONS = {
    list = 'dialogs_storage_list',
    inbox_apply = 'dialogs_storage_inbox_apply',
    inbox_apply_many = 'dialogs_storage_inbox_apply_many',
    read_count = 'dialogs_storage_read_count',
    mark_read_apply = 'dialogs_storage_mark_read_apply',
}
-- The sharded recount's view of a storage (dialogs.recount_sharded): a Lua
-- function routers call on each master directly (it reads every bucket this
-- replica set owns, so no bucket reference is taken), setuid: it reads spaces
-- the routers' user may not.
M.SCAN_FUNCTION = 'dialogs_storage.inbox_scan'
-- The bucket count this storage keeps (dialogs.bucket), which a router compares
-- with its own before it serves: a Lua function, called by name.
M.COUNT_FUNCTION = 'dialogs_storage.bucket_count'

-- Defines the entries (setuid C functions), the count function and the
-- recount's scan (Lua),
-- and lets the user routers log in as execute them, and nobody else: the role
-- `sharding` where the configuration declares it (Tarantool 3), else `user`
-- (vshard's user, the replication user). On the writable instance, as admin.
function M.register_functions(user)
    local functions = {
        {M.READ_FUNCTION, {language = 'C', setuid = true}},
        {M.WRITE_FUNCTION, {language = 'C', setuid = true}},
        {M.INBOX_FUNCTIONS.list, {language = 'C', setuid = true}},
        {M.INBOX_FUNCTIONS.inbox_apply, {language = 'C', setuid = true}},
        {M.INBOX_FUNCTIONS.inbox_apply_many, {language = 'C', setuid = true}},
        {M.INBOX_FUNCTIONS.read_count, {language = 'C', setuid = true}},
        {M.INBOX_FUNCTIONS.mark_read_apply, {language = 'C', setuid = true}},
        {M.COUNT_FUNCTION, {language = 'LUA', setuid = false}},
        {M.SCAN_FUNCTION, {language = 'LUA', setuid = true}},
    }
    for _, def in ipairs(functions) do
        local name, opts = def[1], def[2]
        local f = box.func[name]
        if f ~= nil and (f.language ~= opts.language or f.setuid ~= opts.setuid) then
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {language = opts.language, setuid = opts.setuid,
                                      if_not_exists = true})
        local grantee = nil
        if box.schema.role.exists('sharding') then
            box.schema.role.grant('sharding', 'execute', 'function', name,
                {if_not_exists = true})
            grantee = 'role sharding'
        end
        if user ~= nil and box.schema.user.exists(user) then
            box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
            grantee = 'user ' .. user
        end
        if grantee == nil then
            log.warn('dialogs: %s granted to nobody yet: routers go through '
                .. 'vshard.storage.call', name)
        end
    end
end

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

-- Called by routers (through vshard.storage.call, which holds the bucket's
-- reference meanwhile) with the bucket and a client's arguments, which the
-- router has already validated.
local api = {}

function api.new_dialog(bucket_id, args)
    local f = box.func[M.WRITE_FUNCTION]
    return one_value(pcall(f.call, f, {bucket_id, args}))
end

function api.get_dialog(bucket_id, args)
    local f = box.func[M.READ_FUNCTION]
    return one_page(pcall(f.call, f, {bucket_id, args}))
end

-- The inbox's entries, each one value ({...} maps and arrays as the entry
-- returns them). inbox_apply is also what the outbox of another storage (or of
-- this one) delivers to.
for name, key in pairs({list_dialogs = 'list', inbox_apply = 'inbox_apply',
                        read_count = 'read_count', mark_read_apply = 'mark_read_apply'}) do
    local entry = M.INBOX_FUNCTIONS[key]
    api[name] = function(bucket_id, args)
        local f = box.func[entry]
        return one_value(pcall(f.call, f, {bucket_id, args}))
    end
end

-- The sharded recount's reads and repairs (dialogs.recount_sharded).
function api.inbox_scan(kind, after, limit)
    return require('dialogs.recount_sharded').scan(kind, after, limit)
end

function api.inbox_repair(bucket_id, changes)
    return one_value(pcall(require('dialogs.recount_sharded').repair, bucket_id, changes))
end

-- The bucket count this storage keeps, or nil before it has one (a replica
-- before its first sync).
function api.bucket_count()
    return require('dialogs.bucket').stored_count()
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
-- The functions routers call, published as the global dialogs_storage.
local function publish()
    rawset(_G, 'dialogs_storage', api)
end

function M.start(s)
    settings = s
    publish()
    local vshard = require('vshard')
    -- vshard's functions in _func are named vshard.storage.*: it must be global.
    rawset(_G, 'vshard', vshard)
    vshard.storage.cfg(M.vshard_cfg(s), M.box_identity(s).instance_uuid)
    require('dialogs.outbox').start()
    log.info('dialogs: vshard storage of replica set %s (%d buckets), cluster %s',
        s.sharding.replicaset.name, s.bucket_count, sharding.describe(s.sharding.replicasets))
end

-- A new topology for a running storage (a replica set added or removed), given
-- in DIALOGS_SHARDING's form; run as admin on every storage and router (docs/sharding.md,
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

------------------------------------------------------------------------------
-- Tarantool 3: the role `dialogs.storage` (docs/sharding.md, "Sharding on Tarantool 3").
-- The configuration's sharding section makes the instance a vshard storage
-- (`sharding: {roles: [storage]}`); this role makes it the store's: on the
-- writable instance the schema, the procedures and the bucket count
-- (sharding.bucket_count), no application user; everywhere the functions routers
-- call and the expiry of request ids.
--
--   roles: [dialogs.storage]
--   roles_cfg:
--     dialogs.storage:
--       lib_dir: target/dialogs   # default: the checkout's, else package.cpath
--       request_ttl: 604800
--       slow_ms: 100              # log calls this slow (docs/metrics.md); default off
------------------------------------------------------------------------------

M.ROLE = 'dialogs.storage'
M.ROLE_KEYS = {'lib_dir', 'request_ttl', 'slow_ms'}
-- The role's fiber (dialogs.background: one per instance across reloads).
local FIBER = 'storage_role'

local function role_settings(cfg)
    local s = sharding.role_settings(M.ROLE, cfg, M.ROLE_KEYS)
    s.request_ttl = require('dialogs.config').read_request_ttl(s.src)
    s.slow_ms = require('dialogs.config').read_slow_ms(s.src)
    s.bucket_count = sharding.config_bucket_count()
    return s
end

local function set_up_writable(s)
    require('dialogs.setup').writable_instance({
        bucket_count = s.bucket_count,
        bucket_count_setting = 'sharding.bucket_count',
        takes_clients = false,
    })
    log.info('dialogs: storage set up as the writable instance (%d buckets)', s.bucket_count)
end

-- roles: refuses bad roles_cfg['dialogs.storage'], naming the key.
function M.validate(cfg)
    role_settings(cfg)
end

function M.apply(cfg)
    local s = role_settings(cfg)
    require('dialogs').use_lib_dir(s.lib_dir)
    publish()
    local background = require('dialogs.background')
    background.stop(FIBER)
    if not box.info.ro then
        set_up_writable(s)
    else
        require('dialogs.bucket').check_count(s.bucket_count, 'sharding.bucket_count')
    end
    background.start(FIBER, background.whenever_writable, 'the storage', set_up_writable, s,
        not box.info.ro)
    require('dialogs.requests').start_expiry(s.request_ttl)
    require('dialogs.metrics').start(s.slow_ms, s.src.name('slow_ms'))
    require('dialogs.outbox').start()
    log.info('dialogs: storage role applied (%s, %d buckets)',
        box.info.ro and 'read-only' or 'writable', s.bucket_count)
end

-- roles: stops the fibers and withdraws the functions routers call; the data
-- (the outbox's rows included) stays.
function M.stop()
    require('dialogs.background').stop(FIBER)
    require('dialogs.requests').stop_expiry()
    require('dialogs.outbox').stop()
    rawset(_G, 'dialogs_storage', nil)
end

return M

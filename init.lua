-- dialogs: one Tarantool instance of the direct-message store (the 2.x entry).
--
--   tarantool init.lua
--
-- Reads its configuration from DIALOGS_* environment variables (README.md,
-- "Configuration"), validates all of it before touching the database, runs
-- box.cfg, and then, on the writable instance, applies the versioned schema
-- migrations, registers the native procedures and sets up the users. Safe to run
-- on every start. The work itself lives in the modules under dialogs/, one
-- concern each, which a Tarantool 3 role reuses with settings from its own
-- configuration.

local fio = require('fio')
local log = require('log')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
package.path = fio.pathjoin(here, '?.lua') .. ';' .. fio.pathjoin(here, '?', 'init.lua')
    .. ';' .. package.path

local access = require('dialogs.access')
local admin = require('dialogs.admin')
local bucket = require('dialogs.bucket')
local config = require('dialogs.config')
local replication = require('dialogs.replication')
local requests = require('dialogs.requests')
local setup = require('dialogs.setup')
local sharding = require('dialogs.sharding')

local cfg = config.from_env(os.environ(), here)
local r = cfg.replication
-- Sharded (DIALOGS_SHARDING): a router, or a storage (docs/sharding.md);
-- otherwise a store of its own.
local sh = cfg.sharding
local is_router = sh ~= nil and sh.router
local is_storage = sh ~= nil and not sh.router
if sh ~= nil then
    sharding.load_vshard(os.getenv('VSHARD_DIR'), config.ENV.sharding)
end

package.cpath = cfg.lib_dir .. '/?.so;' .. package.cpath
-- Refused before the database is touched: a path that is not ours to replace.
if r.admin_socket ~= nil then
    admin.check(r.admin_socket, config.ENV.admin_socket)
end

local box_opts = replication.box_options(r, {
    listen = cfg.listen,
    memtx_dir = cfg.data_dir,
    wal_dir = cfg.data_dir,
    vinyl_dir = cfg.data_dir,
    memtx_memory = cfg.memtx_memory,
    wal_mode = cfg.wal_mode,
    log_level = cfg.log_level,
})
if is_storage then
    -- vshard knows the storages by these uuids, derived from the topology.
    for k, v in pairs(require('dialogs.storage').box_identity(cfg)) do
        box_opts[k] = v
    end
elseif is_router then
    -- A router listens once its functions exist: a client that connects while it
    -- restarts is refused and reconnects, rather than calling what is not there.
    box_opts.listen = nil
end
fio.mktree(cfg.data_dir)
box.cfg(box_opts)
-- What guest may do (a storage refuses DIALOGS_GUEST in config.read).
cfg.guest_setting = config.ENV.guest

if is_router then
    local router = require('dialogs.router')
    box.session.su('admin', router.setup, cfg, config.ENV.user)
    router.start(cfg)
    box.cfg({listen = cfg.listen})
else
    -- The set-up of the writable instance: now, or, where it must first take the
    -- synchronous queue (a restart on 3.x) and its quorum is not there yet, once
    -- the queue is taken.
    cfg.user_setting = config.ENV.user
    cfg.bucket_count_setting = config.ENV.bucket_count
    -- A storage takes calls from routers only.
    cfg.takes_clients = not is_storage
    local set_up = setup.once(cfg)
    replication.take_queue(r, set_up)
    set_up()
    if box.info.ro then
        bucket.check_count(cfg.bucket_count, config.ENV.bucket_count)
    end
    if is_storage then
        require('dialogs.storage').start(cfg)
    end

    -- Request ids expire on the writable instance; a replica's pruner waits.
    requests.start_expiry(cfg.request_ttl)
end

-- The slow-call threshold, and the collectors where the metrics module is.
require('dialogs.metrics').start(cfg.slow_ms, config.ENV.slow_ms)

if r.admin_socket ~= nil then
    admin.open(r.admin_socket, config.ENV.admin_socket)
end
log.info('dialogs: replication: %s', replication.describe(r))
if is_storage then
    -- Clients call the routers; routers and peers log in as the replication user.
    log.info('dialogs: storage of replica set %s listening on %s (data in %s)',
        sh.replicaset.name, cfg.listen, cfg.data_dir)
    return
end
access.log_guest_access(cfg.guest, config.ENV.guest)
log.info('dialogs: listening on %s as user %q (data in %s)%s', cfg.listen, cfg.user,
    cfg.data_dir, is_router and ', a router of the sharded store' or '')
if cfg.password == config.DEV_PASSWORD then
    log.info('dialogs: connect as %s, password %q (the loopback development default): '
        .. "require('net.box').connect('%s:%s@%s'), then call new_dialog / get_dialog",
        cfg.user, config.DEV_PASSWORD, cfg.user, config.DEV_PASSWORD, cfg.listen)
else
    log.info('dialogs: connect as %s with the password in DIALOGS_PASSWORD, '
        .. 'then call new_dialog / get_dialog', cfg.user)
end

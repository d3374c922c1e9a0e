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
local schema = require('dialogs.schema')

local cfg = config.from_env(os.environ(), here)
local r = cfg.replication

package.cpath = cfg.lib_dir .. '/?.so;' .. package.cpath
-- Refused before the database is touched: a path that is not ours to replace.
if r.admin_socket ~= nil then
    admin.check(r.admin_socket, config.ENV.admin_socket)
end

fio.mktree(cfg.data_dir)
box.cfg(replication.box_options(r, {
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
        schema.upgrade_system_spaces()
        bucket.store_count(cfg.bucket_count, config.ENV.bucket_count)
        schema.migrate()
        replication.apply_sync_mode(r)
        schema.register_functions()
        access.setup_app_user(cfg, config.ENV.user)
        access.restrict_public_role()
        access.setup_replication_user(r)
    end)
else
    bucket.check_count(cfg.bucket_count, config.ENV.bucket_count)
end

-- The writable instance of a synchronous replica set owns the synchronous queue
-- before it reports ready, where the server needs an owner and the quorum is
-- there; otherwise it takes it in the background once the peers are (logged).
if replication.take_queue(r) then
    replication.wait_queue(r.connect_timeout)
end

-- Request ids expire on the writable instance; a replica's pruner waits.
requests.start_expiry(cfg.request_ttl)

if r.admin_socket ~= nil then
    admin.open(r.admin_socket, config.ENV.admin_socket)
end
log.info('dialogs: replication: %s', replication.describe(r))
log.info('dialogs: listening on %s as user %q (data in %s)', cfg.listen, cfg.user, cfg.data_dir)
if cfg.password == config.DEV_PASSWORD then
    log.info('dialogs: connect as %s, password %q (the loopback development default): '
        .. "require('net.box').connect('%s:%s@%s'), then call new_dialog / get_dialog",
        cfg.user, config.DEV_PASSWORD, cfg.user, config.DEV_PASSWORD, cfg.listen)
else
    log.info('dialogs: connect as %s with the password in DIALOGS_PASSWORD, '
        .. 'then call new_dialog / get_dialog', cfg.user)
end

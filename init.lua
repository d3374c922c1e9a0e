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

local admin = require('dialogs.admin')
local config = require('dialogs.config')
local replication = require('dialogs.replication')
local requests = require('dialogs.requests')
local setup = require('dialogs.setup')

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

-- The set-up of the writable instance: now, or, where it must first take the
-- synchronous queue (a restart on 3.x) and its quorum is not there yet, once
-- the queue is taken.
cfg.user_setting = config.ENV.user
local set_up = setup.once(cfg)
replication.take_queue(r, set_up)
set_up()

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

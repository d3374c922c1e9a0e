-- dialogs.admin: the admin console scripts/promote talks to, on a unix socket.

local errno = require('errno')
local fio = require('fio')
local socket = require('socket')

local M = {}

-- How long a probe of an existing socket waits for its listener, seconds.
local PROBE_TIMEOUT_S = 1

local function refuse(setting, fmt, ...)
    error(string.format('dialogs: %s: ' .. fmt, setting, ...), 0)
end

-- Checks that `path` is free for the console, or holds a stale socket (one nobody
-- listens on any more: a previous run's), which is removed. Anything else stops
-- the start-up with a message naming `setting`: a file, directory or link that
-- is not a socket is never removed, nor a socket another process listens on.
function M.check(path, setting)
    local st = fio.lstat(path)
    if st == nil then
        return
    end
    if not st:is_sock() then
        refuse(setting, '%s exists and is not a unix socket; refusing to replace it '
            .. '(remove it, or choose another path)', path)
    end
    local s = socket.tcp_connect('unix/', path, PROBE_TIMEOUT_S)
    if s ~= nil then
        s:close()
        refuse(setting, 'another process is listening on %s (another instance?); '
            .. 'stop it, or choose another path', path)
    end
    local err = errno()
    if err ~= errno.ECONNREFUSED and err ~= errno.ENOENT then
        refuse(setting, 'cannot tell whether %s is in use (%s); refusing to replace it',
            path, errno.strerror(err))
    end
    fio.unlink(path) -- a stale socket of a previous run
end

-- Opens the admin console on the unix socket `path` (after M.check): owner-only
-- (0600), created under a umask so that it is never reachable by others, even
-- briefly.
function M.open(path, setting)
    M.check(path, setting)
    local old = fio.umask(tonumber('177', 8))
    local ok, err = pcall(require('console').listen, 'unix/:' .. path)
    fio.umask(old)
    if not ok then
        refuse(setting, 'cannot listen on %s: %s', path, err)
    end
    fio.chmod(path, tonumber('600', 8))
end

return M

-- dialogs.admin: the admin console scripts/promote talks to, on a unix socket.

local fio = require('fio')

local M = {}

-- Opens the admin console on the unix socket `path`: owner-only (0600), created
-- under a umask so that it is never reachable by others, even briefly.
-- `setting` names the setting in error messages.
function M.open(path, setting)
    if fio.path.lexists(path) then
        fio.unlink(path) -- a stale socket of a previous run
    end
    local old = fio.umask(tonumber('177', 8))
    local ok, err = pcall(require('console').listen, 'unix/:' .. path)
    fio.umask(old)
    if not ok then
        error(string.format('dialogs: %s: cannot listen on %s: %s', setting, path, err), 0)
    end
    fio.chmod(path, tonumber('600', 8))
end

return M

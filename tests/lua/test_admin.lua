-- dialogs.admin: the admin socket replaces only a stale socket of its own kind.

local fio = require('fio')
local socket = require('socket')

local admin = require('dialogs.admin')
local check = require('check')

local SETTING = 'DIALOGS_ADMIN_SOCKET'

-- Runs fn(path) with a socket path in a fresh directory, removed afterwards.
local function with_path(fn)
    local dir = fio.tempdir()
    local ok, err = pcall(fn, fio.pathjoin(dir, 'admin.sock'))
    fio.rmtree(dir)
    if not ok then
        error(err, 0)
    end
end

local function write_file(path, text)
    local f = fio.open(path, {'O_CREAT', 'O_WRONLY', 'O_TRUNC'}, tonumber('644', 8))
    f:write(text)
    f:close()
end

local function read_file(path)
    local f = fio.open(path, {'O_RDONLY'})
    local text = f:read(4096)
    f:close()
    return text
end

-- A unix socket file nobody listens on: bound, then closed without unlinking.
local function stale_socket(path)
    local s = socket('AF_UNIX', 'SOCK_STREAM', 0)
    assert(s:bind('unix/', path), 'bind')
    assert(s:listen(1), 'listen')
    s:close()
    assert(fio.lstat(path):is_sock(), 'the socket file stays')
end

-- True when something accepts connections on the unix socket at path.
local function alive(path)
    local c = socket.tcp_connect('unix/', path, 1)
    if c == nil then
        return false
    end
    c:close()
    return true
end

return {
    {'a regular file is refused and kept', function()
        with_path(function(path)
            write_file(path, 'precious')
            check.raises(string.format('dialogs: %s: %s exists and is not a unix socket; '
                .. 'refusing to replace it (remove it, or choose another path)', SETTING,
                path), admin.open, path, SETTING)
            check.equal(read_file(path), 'precious', 'the file')
        end)
    end},

    {'a directory and a symbolic link are refused and kept', function()
        with_path(function(path)
            fio.mkdir(path)
            check.raises(string.format('dialogs: %s: %s exists and is not a unix socket; '
                .. 'refusing to replace it (remove it, or choose another path)', SETTING,
                path), admin.check, path, SETTING)
            check.equal(fio.path.is_dir(path), true, 'the directory is there')
        end)
        with_path(function(path)
            local target = path .. '.target'
            stale_socket(target)
            fio.symlink(target, path)
            check.raises(string.format('dialogs: %s: %s exists and is not a unix socket; '
                .. 'refusing to replace it (remove it, or choose another path)', SETTING,
                path), admin.check, path, SETTING)
            check.equal(fio.readlink(path), target, 'the link')
        end)
    end},

    {"another process's live socket is refused and keeps serving", function()
        with_path(function(path)
            local server = socket.tcp_server('unix/', path, function() end)
            assert(server, 'listening')
            local ok, err = pcall(admin.open, path, SETTING)
            server:close()
            check.equal(ok, false, 'opened over a live socket')
            check.equal(err, string.format('dialogs: %s: another process is listening on %s '
                .. '(another instance?); stop it, or choose another path', SETTING, path),
                'message')
        end)
        with_path(function(path)
            local server = socket.tcp_server('unix/', path, function() end)
            pcall(admin.check, path, SETTING)
            check.equal(alive(path), true, 'the other listener still answers')
            server:close()
        end)
    end},

    {'a stale socket is replaced by the console, owner-only', function()
        with_path(function(path)
            stale_socket(path)
            check.equal(alive(path), false, 'stale before')
            admin.open(path, SETTING)
            check.equal(alive(path), true, 'the console listens')
            check.equal(bit.band(fio.lstat(path).mode, tonumber('777', 8)),
                tonumber('600', 8), 'mode')
        end)
    end},

    {'a free path gets the console', function()
        with_path(function(path)
            admin.open(path, SETTING)
            local c = socket.tcp_connect('unix/', path, 1)
            local greeting = c:read(128, 1)
            c:close()
            check.equal(greeting:match('^Tarantool') ~= nil, true, 'a Tarantool greeting')
        end)
    end},
}

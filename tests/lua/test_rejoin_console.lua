-- dialogs.console_client (what scripts/rejoin talks to the new master through),
-- against a console this test process opens on a unix socket: the code a call
-- sends runs here, no box.cfg needed.

local fio = require('fio')
local socket = require('socket')

local check = require('check')
local console_client = require('dialogs.console_client')

local TIMEOUT_S = 10
-- A text that console or YAML quoting would change: quotes of every kind, a long
-- bracket, a newline, a YAML document end, non-ASCII.
local AWKWARD = 'a «ü» \'x\' "q" ]] [[\n...\n--- \\ %s'

-- Runs f(path) with a console listening on a fresh unix socket `path`.
local function with_console(f)
    local dir = fio.tempdir()
    local path = fio.pathjoin(dir, 'admin.sock')
    local server = require('console').listen('unix/:' .. path)
    local ok, err = pcall(f, path)
    server:close()
    fio.unlink(path)
    fio.rmdir(dir)
    if not ok then
        error(err, 0)
    end
end

return {
    {'a call runs its body there with its argument and returns its value', function()
        with_console(function(path)
            local c = console_client.connect(path, TIMEOUT_S)
            check.equal(c:call('return {echo = a[1], n = #a[1].text}', {text = AWKWARD}),
                {echo = {text = AWKWARD}, n = #AWKWARD}, 'echo')
            check.equal(c:call('return a[1] == nil'), true, 'no argument')
            check.equal(c:call('return 2 + 2'), 4, 'a second call on the connection')
            c:close()
        end)
    end},
    {'an error raised there is an error here', function()
        with_console(function(path)
            local c = console_client.connect(path, TIMEOUT_S)
            local ok, err = pcall(c.call, c, "error('no such space', 0)")
            check.equal({ok, err}, {false, 'on the master: no such space'}, 'raised')
            check.equal(c:call("return 'still serving'"), 'still serving', 'after')
            c:close()
        end)
    end},
    {'a socket nobody listens on, or no console, is an error naming it', function()
        local dir = fio.tempdir()
        local path = fio.pathjoin(dir, 'none.sock')
        local ok, err = pcall(console_client.connect, path, TIMEOUT_S)
        check.equal(ok, false, 'no socket')
        check.equal(err:find('cannot connect to the master\'s admin socket ' .. path, 1, true),
            1, err)
        local server = socket.tcp_server('unix/', path, function(s)
            s:write(string.rep('x', 128))
        end)
        check.raises(path .. ' is not a Tarantool console', console_client.connect, path,
            TIMEOUT_S)
        server:close()
        fio.unlink(path)
        fio.rmdir(dir)
    end},
    {'a reply without the call\'s hex line is no value', function()
        check.equal(console_client.reply_value('---\n- error: bad line\n...\n'), nil, 'error')
        -- What the console prints for the line: its hex string as a YAML list.
        local line = console_client.request_line('return a[1]', {1, 'two'})
        local hex = loadstring(line)()
        check.equal({console_client.reply_value('---\n- ' .. hex .. '\n...\n')},
            {true, {1, 'two'}}, 'the value')
    end},
}

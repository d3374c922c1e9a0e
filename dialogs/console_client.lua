-- dialogs.console_client: the client side of an instance's admin console (a unix
-- socket, DIALOGS_ADMIN_SOCKET; dialogs/admin.lua opens it), for the tools that
-- run code on a live instance (scripts/rejoin).
--
--   connect(path [, timeout])        a client, once the console has greeted it
--   client:call(body [, arg])        runs `body` there with `arg`, returns its value
--   client:close()
--   request_line(body, arg)          the one line call() sends (pure, for tests)
--   reply_value(reply)               what call() makes of the console's reply
--   to_hex(bytes)                    lowercase hex
--
-- A call's argument and its result travel as hex of JSON inside the console's line
-- and YAML reply: no console or YAML quoting ever touches a message text. Every
-- failure is an error (a string naming the socket).

local errno = require('errno')
local json = require('json')
local socket = require('socket')

local M = {}

-- Tarantool's console greeting: two 64-byte lines; a reply ends with this line.
local GREETING_BYTES = 128
local REPLY_END = '\n...\n'
M.DEFAULT_TIMEOUT_S = 30

local function to_hex(s)
    return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end
-- Lowercase hex of a byte string (also what scripts/backup prints a sha256 as).
M.to_hex = to_hex

local function from_hex(s)
    return (s:gsub('..', function(h) return string.char(tonumber(h, 16)) end))
end

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

-- The line that runs `body` (Lua statements ending in `return <value>`, one line)
-- with `arg` (any JSON value) bound to local `a` as a one-element list, and
-- returns, as hex of JSON, {ok = whether body ran, v = its value or its error}.
function M.request_line(body, arg)
    return string.format("local json = require('json') "
        .. "local a = json.decode((('%s'):gsub('..', function(h) "
        .. "return string.char(tonumber(h, 16)) end))) "
        .. "local ok, v = pcall(function() %s end) "
        .. "if not ok then v = tostring(v) end "
        .. "return (json.encode({ok = ok, v = v}):gsub('.', function(ch) "
        .. "return string.format('%%02x', ch:byte()) end))",
        to_hex(json.encode({arg == nil and json.NULL or arg})), body)
end

-- The console's reply to a request_line: ok (true when body ran) and its value
-- (or its error). nil when the reply holds no hex line (the console refused
-- the line itself).
function M.reply_value(reply)
    local hex = reply:match('\n%- ([0-9a-f]+)\n')
    if hex == nil then
        return nil
    end
    local out = json.decode(from_hex(hex))
    return out.ok, out.v
end

local Client = {}
Client.__index = Client

-- Connects to the console at `path` and reads its greeting.
function M.connect(path, timeout)
    timeout = timeout or M.DEFAULT_TIMEOUT_S
    local s = socket.tcp_connect('unix/', path, timeout)
    if s == nil then
        fail('cannot connect to the master\'s admin socket %s: %s', path, errno.strerror())
    end
    local greeting = s:read(GREETING_BYTES, timeout)
    if greeting == nil or not greeting:match('^Tarantool') then
        s:close()
        fail('%s is not a Tarantool console', path)
    end
    return setmetatable({sock = s, path = path, timeout = timeout}, Client)
end

-- Runs `body` on the instance (see request_line) and returns its value; an error
-- raised there is raised here as 'on the master: ...'.
function Client:call(body, arg)
    if not self.sock:write(M.request_line(body, arg) .. '\n', self.timeout) then
        fail('writing to %s: %s', self.path, self.sock:error())
    end
    local reply = self.sock:read({delimiter = REPLY_END}, self.timeout)
    if reply == nil or reply == '' then
        fail('no reply from %s within %ss', self.path, self.timeout)
    end
    local ok, v = M.reply_value(reply)
    if ok == nil then
        fail('unexpected reply from %s: %s', self.path, reply)
    end
    if not ok then
        fail('on the master: %s', v)
    end
    return v
end

function Client:close()
    self.sock:close()
end

return M

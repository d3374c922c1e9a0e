-- Assertions for the plain-Lua unit tests (tests/lua/run.lua).

local M = {}

local function show(v)
    if type(v) == 'string' then
        return string.format('%q', v)
    end
    if type(v) == 'table' then
        return require('json').encode(v)
    end
    return tostring(v)
end

local function deep_equal(a, b)
    if type(a) ~= type(b) then
        return false
    end
    if type(a) ~= 'table' then
        return a == b
    end
    for k, v in pairs(a) do
        if not deep_equal(v, b[k]) then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

function M.equal(got, want, what)
    if not deep_equal(got, want) then
        error(string.format('%s: got %s, want %s', what or 'value', show(got), show(want)), 2)
    end
end

-- Calls fn(...) and checks that it raised exactly `message`.
function M.raises(message, fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then
        error(string.format('no error, want %s', show(message)), 2)
    end
    if tostring(err) ~= message then
        error(string.format('error %s, want %s', show(tostring(err)), show(message)), 2)
    end
end

return M

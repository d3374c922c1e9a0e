-- dialogs.ids: the derived dialog ids match the vectors the native module and the
-- Python helpers are tested against (tests/ids_vectors.txt).

local fio = require('fio')

local check = require('check')
local ids = require('dialogs.ids')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
local VECTORS = fio.pathjoin(fio.dirname(here), 'ids_vectors.txt')

local function vectors()
    local out = {}
    for line in io.lines(VECTORS) do
        if line:sub(1, 1) ~= '#' and line ~= '' then
            local kind, want, rest = line:match('^(%S+) (%S+) (.*)$')
            table.insert(out, {kind = kind, want = want, rest = rest, line = line})
        end
    end
    return out
end

return {
    {'every key and pair vector', function()
        local n = 0
        for _, v in ipairs(vectors()) do
            local got
            if v.kind == 'key' then
                got = ids.dialog_of_key(v.rest)
            else
                local a, b = v.rest:match('^(%S+) (%S+)$')
                got = ids.dialog_of_pair(a, b)
            end
            check.equal(got:str(), v.want, v.line)
            n = n + 1
        end
        check.equal(n >= 10, true, "vectors: " .. n)
    end},
    {'a v5 uuid carries its version and variant', function()
        local u = ids.dialog_of_key('x'):bin('b')
        check.equal(bit.rshift(u:byte(7), 4), 5, 'version')
        check.equal(bit.rshift(u:byte(9), 6), 2, 'variant')
    end},
}

-- The plain-Lua unit tests of the dialogs modules: no box.cfg, no server.
--
--   tarantool tests/lua/run.lua [FILE...]     (default: every tests/lua/test_*.lua)
--
-- Each test file returns a list of {name, function}; a case passes when its
-- function returns without an error. Prints one line per case and, last,
-- 'lua: N passed, N failed'; exits 1 when any case failed.

local fio = require('fio')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
local repo = fio.dirname(fio.dirname(here))
package.path = fio.pathjoin(repo, '?.lua') .. ';' .. fio.pathjoin(repo, '?', 'init.lua') .. ';'
    .. fio.pathjoin(here, '?.lua') .. ';'
    .. package.path

local files = {}
for i = 1, #arg do
    files[i] = arg[i]
end
if #files == 0 then
    files = fio.glob(fio.pathjoin(here, 'test_*.lua'))
    table.sort(files)
end

local passed, failed = 0, 0
for _, file in ipairs(files) do
    local cases = dofile(file)
    for _, case in ipairs(cases) do
        local name, fn = case[1], case[2]
        local ok, err = xpcall(fn, debug.traceback)
        if ok then
            passed = passed + 1
            print(string.format('ok   %s: %s', fio.basename(file), name))
        else
            failed = failed + 1
            print(string.format('FAIL %s: %s\n%s', fio.basename(file), name, tostring(err)))
        end
    end
end
print(string.format('lua: %d passed, %d failed', passed, failed))
os.exit(failed == 0 and 0 or 1)

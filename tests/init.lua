-- Init script of the in-Tarantool test suite:
--
--   tarantool-test -p target/dialogs-test/libdialogs.so -- -i tests/init.lua
--
-- tarantool-test copies this file into a temp dir and runs it with
-- TARANTOOL_RUNNER_* variables. It starts the product exactly as `make run` does
-- (the real init.lua: box.cfg, migrations, functions, users), from the test build
-- of the module, then registers the test-only procedure and runs the suite.
local fio = require('fio')
local json = require('json')

local env = os.environ()
local base = env.TARANTOOL_RUNNER_BASEDIR
local lib_dir = fio.abspath(env.TARANTOOL_RUNNER_PACKAGE_LOCATION)
local repo = fio.abspath(fio.pathjoin(lib_dir, '..', '..'))

os.setenv('DIALOGS_DATA_DIR', fio.pathjoin(base, 'data'))
os.setenv('DIALOGS_LISTEN', 'unix/:' .. fio.pathjoin(base, 'dialogs.sock'))
os.setenv('DIALOGS_LIB_DIR', lib_dir)
os.setenv('DIALOGS_MEMTX_MEMORY', tostring(512 * 1024 * 1024))
os.setenv('DIALOGS_PASSWORD', 'test-password')
os.setenv('DIALOGS_LOG_LEVEL', '4')
dofile(fio.pathjoin(repo, 'init.lua'))

-- Panics on purpose, inside a transaction that has written a message.
box.schema.func.create('dialogs_test_panic', {language = 'C', setuid = true})

-- Calls a registered function as a client would and reports the outcome as
-- JSON: {ok = true, values = {...}} or {ok = false, code = N, message = '...'}.
function _G.dialogs_call(name, args)
    local res = {pcall(box.func[name].call, box.func[name], args)}
    if not res[1] then
        local e = res[2]
        return json.encode({ok = false, code = e.code, message = e.message})
    end
    table.remove(res, 1)
    return json.encode({ok = true, values = res})
end

-- An integer (Lua number or 64-bit cdata) as its exact decimal digits.
function _G.dialogs_int(x)
    if type(x) == 'cdata' then
        return (tostring(x):gsub('U?LL$', ''))
    end
    return string.format('%d', x)
end

local package = env.TARANTOOL_RUNNER_PACKAGE_NAME .. '.'
    .. env.TARANTOOL_RUNNER_PACKAGE_ENTRYPOINT
box.schema.func.create(package, {language = 'C'})
local ok, err = pcall(box.func[package].call, box.func[package], {env.TARANTOOL_RUNNER_INPUT})
if not ok then
    io.stderr:write(tostring(err), '\n')
    os.exit(1)
end
os.exit(0)

-- luacheck configuration: every Lua file of the repository (make lint-lua).
-- Tarantool runs LuaJIT; it adds the global `box`, two functions to `os` and
-- `table.copy` (a shallow copy).
std = 'luajit'
read_globals = {'box', os = {fields = {'environ', 'setenv'}}, table = {fields = {'copy'}}}
max_line_length = 100
exclude_files = {'target/', '.venv/'}

-- Functions the benchmark's load generator and the in-Tarantool test runner call
-- by name are globals by design.
files['bench/lua/bench.lua'] = {globals = {'bench_info', 'bench_fill', 'bench_micro',
    'bench_memory', 'bench_noop'}}
files['bench/lua/baseline.lua'] = {globals = {'lua_new_dialog', 'lua_get_dialog'}}

-- The capability tests stand in for the server's `box` (no server runs there).
files['tests/lua/test_capabilities.lua'] = {globals = {'box'}}

-- A storage of the benchmark's sharded cluster: the product's own init.lua
-- (DIALOGS_BENCH_INIT, configured by the same DIALOGS_* variables), plus one
-- helper the load generator needs and nothing else:
--   * bench_outbox_len(): the rows still in this storage's outbox, so that a cell
--     can wait for every delivery of its requests before it closes its CPU sample
--     (0 on a build without an outbox);
--   * a separate user, DIALOGS_BENCH_USER / DIALOGS_BENCH_PASSWORD, allowed to
--     call it.
-- The product's users and grants are left exactly as init.lua made them.
--
--   DIALOGS_BENCH_PASSWORD=... DIALOGS_SHARDING=... tarantool bench/lua/storage.lua

local fio = require('fio')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
dofile(os.getenv('DIALOGS_BENCH_INIT') or fio.pathjoin(here, '..', '..', 'init.lua'))

-- A global, since calls reach functions by name; set through _G so that it needs
-- no entry in the repository's lint configuration.
rawset(_G, 'bench_outbox_len', function()
    local outbox = box.space.dialogs_outbox
    return outbox == nil and 0 or outbox:len()
end)

if not box.info.ro then
    box.session.su('admin', function()
        box.schema.func.create('bench_outbox_len', {setuid = true, if_not_exists = true})
        local user = os.getenv('DIALOGS_BENCH_USER') or 'dialogs_bench'
        local password = os.getenv('DIALOGS_BENCH_PASSWORD')
        if password == nil or password == '' then
            error('storage.lua: set DIALOGS_BENCH_PASSWORD', 0)
        end
        if box.schema.user.exists(user) then
            box.schema.user.passwd(user, password)
        else
            box.schema.user.create(user, {password = password})
        end
        box.schema.user.grant(user, 'execute', 'function', 'bench_outbox_len',
            {if_not_exists = true})
    end)
end
require('log').info('dialogs bench: storage helpers ready')

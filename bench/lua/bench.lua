-- The benchmark's Tarantool: the product's own init.lua (configured by the same
-- DIALOGS_* variables), plus what only the benchmark needs, in the same instance:
--   * the Lua baseline (baseline.lua): space lua_dialogs, lua_new_dialog, lua_get_dialog;
--   * bench_noop, an empty function: the round-trip floor;
--   * helpers the load generator calls to prepare data and to measure inside the
--     server (bench_info, bench_fill, bench_fill_pairs, bench_micro, bench_memory,
--     bench_inbox_memory);
--   * a separate user, DIALOGS_BENCH_USER / DIALOGS_BENCH_PASSWORD, allowed to call
--     those and to read and write the `dialogs` space directly and to read
--     `dialogs_inbox` (the `raw` target).
-- The product's user and grants are left exactly as init.lua made them: the
-- `native` target connects as that user, with execute on the two procedures only.
--
--   DIALOGS_BENCH_PASSWORD=... tarantool bench/lua/bench.lua

local fio = require('fio')
local fiber = require('fiber')
local clock = require('clock')

local here = fio.dirname(fio.abspath((debug.getinfo(1, 'S').source:gsub('^@', ''))))
dofile(os.getenv('DIALOGS_BENCH_INIT') or fio.pathjoin(here, '..', '..', 'init.lua'))

package.path = fio.pathjoin(here, '?.lua') .. ';' .. package.path
local baseline = require('baseline')

-- Fibers that call a procedure concurrently while filling a space: enough for the
-- WAL to commit many calls per write.
local FILL_FIBERS = 64
-- Calls per transaction in the micro-benchmark of writes: the commit (a WAL
-- round trip) is paid once per batch, so the figure is the procedure's own cost.
local MICRO_TXN_BATCH = 100

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == '' then
        return default
    end
    return v
end

local function tarantool_supports_datetime()
    return (pcall(require, 'datetime'))
end

local function inbox_built()
    return box.space.dialogs_inbox ~= nil
        and box.space._schema:get{'dialogs_inbox_built'} ~= nil
end

-- Space ids and the created_at type, so that the `raw` target can build tuples.
function bench_info()
    return {
        created_at = tarantool_supports_datetime() and 'datetime' or 'unsigned',
        dialogs_space = box.space.dialogs.id,
        dialog_id_k = box.space.dialogs.index.dialog_id_k.id,
        bucket_count = box.space._schema:get{'dialogs_bucket_count'}[2],
        lua_space = box.space[baseline.SPACE].id,
        version = box.info.version,
        -- nil on a build without the inbox, or whose inbox is not built (its
        -- new_dialog keeps none).
        inbox_space = inbox_built() and box.space.dialogs_inbox.id or nil,
        inbox_activity = inbox_built() and box.space.dialogs_inbox.index.activity.id or nil,
    }
end

-- Calls procedure `fname` `total` times from FILL_FIBERS fibers: call i (1 to
-- total) with the arguments args_of(i), and on_result(i, value) with each
-- successful call's value. Raises the first error, named after `who`, if any
-- call failed.
local function call_in_fibers(who, fname, total, args_of, on_result)
    local f = box.func[fname]
    if f == nil then
        error(who .. ': no function ' .. tostring(fname))
    end
    local next_call, failed, first_error = 1, 0, nil
    local done = fiber.channel(FILL_FIBERS)
    for _ = 1, FILL_FIBERS do
        fiber.create(function()
            while next_call <= total do
                local i = next_call
                next_call = i + 1
                local ok, r = pcall(f.call, f, args_of(i))
                if ok then
                    on_result(i, r)
                else
                    failed = failed + 1
                    first_error = first_error or tostring(r)
                end
            end
            done:put(true)
        end)
    end
    for _ = 1, FILL_FIBERS do
        done:get()
    end
    if failed > 0 then
        error(string.format('%s(%s): %d of %d calls failed, first: %s',
            who, fname, failed, total, first_error))
    end
end

-- Calls procedure `fname` (dialog, user_from, user_to, text) per_dialog times for
-- each dialog in `dialogs` (uuid strings), from FILL_FIBERS fibers. Returns the
-- number of calls; raises the first error if any call failed.
function bench_fill(fname, dialogs, per_dialog, user_from, user_to, text)
    local total = #dialogs * per_dialog
    call_in_fibers('bench_fill', fname, total, function(i)
        return {dialogs[(i - 1) % #dialogs + 1], user_from, user_to, text}
    end, function() end)
    return total
end

-- Calls procedure `fname` (dialog, user_from, user_to, text) once for each
-- {dialog, user_from, user_to} of `msgs` (uuid strings), from FILL_FIBERS fibers.
-- Returns the new message ids (strings) in the order of `msgs`; raises the first
-- error if any call failed. Set through _G, as the helpers below, so that it
-- needs no entry in the repository's lint configuration.
local function fill_pairs(fname, msgs, text)
    local ids = {}
    call_in_fibers('bench_fill_pairs', fname, #msgs, function(i)
        local m = msgs[i]
        return {m[1], m[2], m[3], text}
    end, function(i, r)
        -- A C procedure's value may come back in a tuple (2.x).
        while type(r) ~= 'string' and r ~= nil and r[1] ~= nil do
            r = r[1]
        end
        ids[i] = tostring(r)
    end)
    return ids
end
rawset(_G, 'bench_fill_pairs', fill_pairs)

-- Where the server enforces a fiber slice (3.x), the helpers' fiber gets a long
-- one: on a machine busy with other work, a batch or the garbage collection
-- between two measurements can outlast the default second of wall time without
-- a yield ("fiber slice is exceeded"). Probed: older servers have no slice.
local function long_slice()
    if fiber.set_max_slice ~= nil and fiber.set_slice ~= nil then
        local slice = {warn = 60, err = 600}
        fiber.set_max_slice(fiber.self(), slice)
        fiber.set_slice(slice)
    end
end

-- Wall and tx-thread CPU nanoseconds per call of f(args) (f is a box.func
-- object or a Lua function), n calls after n/10 warm-up calls; writes run
-- MICRO_TXN_BATCH calls per transaction. The fiber yields between batches,
-- outside the timed part: a loop that never yields outlives its fiber slice on
-- servers that enforce one (3.x: "fiber slice is exceeded").
local function per_call(f, args, n, in_txn)
    if type(f) == 'function' then
        local fn = f
        f = {call = function(_, a) return fn(a) end}
    end
    local wall, cpu = 0LL, 0LL
    local function run(count)
        local done = 0
        wall, cpu = 0LL, 0LL
        while done < count do
            local k = math.min(MICRO_TXN_BATCH, count - done)
            local w0, c0 = clock.monotonic64(), clock.thread64()
            if in_txn then
                box.begin()
            end
            local ok, err = pcall(function()
                for _ = 1, k do
                    f:call(args)
                end
            end)
            if in_txn then
                if ok then
                    box.commit()
                else
                    box.rollback()
                end
            end
            wall = wall + (clock.monotonic64() - w0)
            cpu = cpu + (clock.thread64() - c0)
            if not ok then
                error(err)
            end
            done = done + k
            fiber.yield()
        end
    end
    run(math.max(1, math.floor(n / 10)))
    -- Every measurement starts from the same garbage collector state.
    collectgarbage('collect')
    fiber.yield()
    run(n)
    return {wall_ns = tonumber(wall) / n, cpu_ns = tonumber(cpu) / n}
end

-- Measurements of the micro-benchmark are interleaved over this many rounds
-- and the fastest round is kept: the tx thread shares the machine, and a
-- loop's cost depends on what the garbage collector happens to be doing.
local MICRO_ROUNDS = 3

-- The in-process micro-benchmark: ns per call through box.func[...]:call, no
-- network. new_dialog with one message (n calls), get_dialog for the newest 50
-- messages of page_dialog (n / 5 calls), native against the Lua baseline, and
-- the empty function. page_floor selects the same 50 tuples straight from the
-- index, with no function at all: what it costs Lua to receive 50 tuples, which
-- every get_dialog call through box.func pays whatever the procedure does.
function bench_micro(n, dialog, user_from, user_to, text, page_dialog)
    long_slice()
    local write_args = {dialog, user_from, user_to, text}
    local page_args = {page_dialog, {reverse = true, limit = 50}}
    local page_key = {require('uuid').fromstr(page_dialog)}
    local by_dialog = box.space.dialogs.index.dialog_id_k
    local function select_page()
        return by_dialog:select(page_key, {limit = 50, iterator = 'REQ'})
    end
    local pages = math.max(1, math.floor(n / 5))
    local plan = {
        {'native_write', box.func.new_dialog, write_args, n, true},
        {'lua_write', box.func.lua_new_dialog, write_args, n, true},
        {'page_floor', select_page, nil, pages, false},
        {'native_page', box.func.get_dialog, page_args, pages, false},
        {'lua_page', box.func.lua_get_dialog, page_args, pages, false},
        {'noop', box.func.bench_noop, {}, n, false},
    }
    -- The fastest round of each, plus every round's wall time (wall_ns_rounds,
    -- in round order): the spread a figure derived from these carries.
    local best = {}
    for _ = 1, MICRO_ROUNDS do
        for _, m in ipairs(plan) do
            local r = per_call(m[2], m[3], m[4], m[5])
            local rounds = best[m[1]] and best[m[1]].wall_ns_rounds or {}
            table.insert(rounds, r.wall_ns)
            if best[m[1]] == nil or r.wall_ns < best[m[1]].wall_ns then
                best[m[1]] = r
            end
            best[m[1]].wall_ns_rounds = rounds
        end
    end
    return best
end

local function memory_snapshot(space)
    local s = box.space[space]
    local index_bytes = 0
    for id, index in pairs(s.index) do
        if type(id) == 'number' then
            index_bytes = index_bytes + index:bsize()
        end
    end
    local slab = box.slab.info()
    return {
        tuples = s:len(),
        space_bsize = s:bsize(),
        index_bsize = index_bytes,
        items_used = slab.items_used,
        arena_used = slab.arena_used,
    }
end

-- Stores n messages through the native new_dialog (spread over `dialogs`) and
-- returns the growth of the space, its indexes and the memtx arena.
function bench_memory(n, dialogs, user_from, user_to, text)
    long_slice()
    local before = memory_snapshot('dialogs')
    local per_dialog = math.ceil(n / #dialogs)
    bench_fill('new_dialog', dialogs, per_dialog, user_from, user_to, text)
    local after = memory_snapshot('dialogs')
    local growth = {}
    for k, v in pairs(after) do
        growth[k] = v - before[k]
    end
    return growth
end

-- The memory of the inbox: n messages, each opening a dialog between two new
-- users, stored through the native new_dialog; returns the growth of the
-- inbox's entries and of the totals rows (tuples, space and index bsize), of the
-- message space, and of the memtx arena. Each message adds two entries, each
-- holding the message's text as its last text, and a totals row per user the
-- store keeps one for.
rawset(_G, 'bench_inbox_memory', function(n, text)
    long_slice()
    if box.space.dialogs_inbox == nil then
        error('bench_inbox_memory: this build has no inbox')
    end
    local uuid = require('uuid')
    local function snapshot()
        local inbox = memory_snapshot('dialogs_inbox')
        local totals = memory_snapshot('dialogs_inbox_totals')
        local messages = memory_snapshot('dialogs')
        return {
            messages = messages.tuples,
            message_bytes = messages.space_bsize + messages.index_bsize,
            entries = inbox.tuples,
            entry_space_bsize = inbox.space_bsize,
            entry_index_bsize = inbox.index_bsize,
            totals = totals.tuples,
            totals_space_bsize = totals.space_bsize,
            totals_index_bsize = totals.index_bsize,
            items_used = inbox.items_used,
            arena_used = inbox.arena_used,
        }
    end
    local msgs = {}
    for i = 1, n do
        local from, to = uuid.str(), uuid.str()
        -- nil dialog: the product derives the pair's dialog.
        msgs[i] = {box.NULL, from, to}
    end
    collectgarbage('collect')
    local before = snapshot()
    fill_pairs('new_dialog', msgs, text)
    local after = snapshot()
    local growth = {}
    for k, v in pairs(after) do
        growth[k] = v - before[k]
    end
    return growth
end)

local HELPERS = {'bench_info', 'bench_fill', 'bench_fill_pairs', 'bench_micro', 'bench_memory',
    'bench_inbox_memory'}

if not box.info.ro then
    box.session.su('admin', function()
        baseline.setup()
        box.schema.func.create('bench_noop', {body = 'function() end', if_not_exists = true})
        for _, name in ipairs(HELPERS) do
            box.schema.func.create(name, {setuid = true, if_not_exists = true})
        end

        local user = env('DIALOGS_BENCH_USER', 'dialogs_bench')
        local password = env('DIALOGS_BENCH_PASSWORD', nil)
        if password == nil then
            error('bench.lua: set DIALOGS_BENCH_PASSWORD', 0)
        end
        if box.schema.user.exists(user) then
            box.schema.user.passwd(user, password)
        else
            box.schema.user.create(user, {password = password})
        end
        local callable = {'bench_noop'}
        for _, name in ipairs(baseline.FUNCTIONS) do
            table.insert(callable, name)
        end
        for _, name in ipairs(HELPERS) do
            table.insert(callable, name)
        end
        for _, name in ipairs(callable) do
            box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
        end
        -- The `raw` target: plain INSERT and SELECT on the product's space.
        box.schema.user.grant(user, 'read,write', 'space', 'dialogs', {if_not_exists = true})
        if box.space.dialogs_inbox ~= nil then
            box.schema.user.grant(user, 'read', 'space', 'dialogs_inbox', {if_not_exists = true})
        end
    end)
end

-- Every cell measures the store as it serves once its inbox is built (the schema
-- builds it from the stored messages after start; on an empty store at once):
-- until then new_dialog keeps no inbox. A build that never sets the flag is
-- said so in the log, and its `list` cells find no entries (errors).
local INBOX_BUILD_TIMEOUT_S = 10
if box.space.dialogs_inbox ~= nil then
    local deadline = clock.monotonic() + INBOX_BUILD_TIMEOUT_S
    while box.space._schema:get{'dialogs_inbox_built'} == nil
        and clock.monotonic() < deadline do
        fiber.sleep(0.01)
    end
    if box.space._schema:get{'dialogs_inbox_built'} == nil then
        require('log').warn('dialogs bench: the inbox is not built: new_dialog keeps none')
    end
end
require('log').info('dialogs bench: baseline and bench user ready')

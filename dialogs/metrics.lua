-- dialogs.metrics: what an operator sees of the store (docs/metrics.md).
--
--   require('dialogs').stats()     every figure below as one Lua table, on any
--                                  server, with or without the `metrics` module
--   require('dialogs.metrics').enable()   the same figures as collectors in the
--                                  default registry of `metrics`, where it exists
--
-- The figures come from three places, all read when they are asked for:
--   * the native counters (src/stats.rs): calls, errors by code and the latency
--     histogram of every procedure called in this process, counted on the call
--     path and read through the C function `dialogs_stats`;
--   * the store's spaces: messages, request records, inbox entries, the outbox
--     (each an O(1) length, or one index lookup);
--   * a router's own counts (dialogs.routing): routed calls by outcome,
--     fallbacks to vshard's ordinary way, retries after a bucket moved.
-- Nothing here runs per call: a collection reads, and costs nothing between two.
--
-- The slow-call threshold (DIALOGS_SLOW_MS, the roles' slow_ms) reaches the
-- native code through the C function `dialogs_slow_calls` (set_slow_ms).

local fiber = require('fiber')
local log = require('log')
local msgpack = require('msgpack')

local M = {}

-- The C functions of this module (granted to nobody; called as admin here).
M.STATS_FUNCTION = 'dialogs_stats'
M.SLOW_FUNCTION = 'dialogs_slow_calls'
M.FUNCTIONS = {M.STATS_FUNCTION, M.SLOW_FUNCTION}

-- Registers the two C functions (not setuid: they touch no space). On the
-- writable instance, as admin; replicas receive them by replication.
function M.register_functions()
    for _, name in ipairs(M.FUNCTIONS) do
        local f = box.func[name]
        if f ~= nil and f.language ~= 'C' then
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {language = 'C', if_not_exists = true})
    end
end

-- Calls one of the C functions: its one value, or nil and why not (the
-- function not registered here yet, or the library without it).
local function call_native(name, args)
    local f = box.func[name]
    if f == nil then
        return nil, string.format('function %s is not registered (the writable instance '
            .. 'registers it)', name)
    end
    local ok, value = pcall(f.call, f, args)
    if not ok then
        return nil, tostring(value)
    end
    -- 2.x wraps a C function's results in one array.
    if type(value) == 'table' and value.procs == nil and value[1] ~= nil then
        value = value[1]
    end
    return value
end

------------------------------------------------------------------------------
-- Slow calls
------------------------------------------------------------------------------

-- Sets the slow-call threshold, milliseconds (nil: off). `setting` names the
-- setting in the log. Returns true if the native side took it.
function M.set_slow_ms(ms, setting)
    local value, err = call_native(M.SLOW_FUNCTION, {ms == nil and box.NULL or ms})
    if err ~= nil then
        log.warn('dialogs: %s not applied: %s', setting or 'slow_ms', err)
        return false
    end
    if ms ~= nil then
        log.info('dialogs: calls of %d ms or more are logged (%s)', value, setting or 'slow_ms')
    end
    return true
end

------------------------------------------------------------------------------
-- The figures
------------------------------------------------------------------------------

-- The Unix seconds a message or outbox id (a UUIDv7) carries.
local function id_seconds(id)
    return require('dialogs.ids').v7_millis(id:bin('b')) / 1000
end

-- The outbox of a vshard storage (dialogs.outbox drains it): what its module
-- tells (`info()`: backlog, oldest_age_s, delivered, failures), else what the
-- space shows (backlog, oldest_age_s); nil where there is no outbox.
local function outbox_figures()
    local space = box.space.dialogs_outbox
    local figures = {}
    -- The module where it is loaded, or where the space says it may run (never
    -- looked for on an instance without an outbox: a router).
    local ok, outbox = true, package.loaded['dialogs.outbox']
    if outbox == nil and space ~= nil then
        ok, outbox = pcall(require, 'dialogs.outbox')
    end
    if ok and type(outbox) == 'table' and type(outbox.info) == 'function' then
        local got, s = pcall(outbox.info)
        if got and type(s) == 'table' then
            for _, key in ipairs({'backlog', 'oldest_age_s', 'delivered', 'failures'}) do
                if type(s[key]) == 'number' then
                    figures[key] = s[key]
                end
            end
        end
    end
    if space == nil and next(figures) == nil then
        return nil
    end
    if space ~= nil and figures.backlog == nil then
        figures.backlog = space:len()
    end
    if space ~= nil and figures.oldest_age_s == nil then
        local oldest = space.index[0] and space.index[0]:min()
        figures.oldest_age_s = oldest and math.max(0, fiber.time() - id_seconds(oldest[1])) or 0
    end
    return figures
end

-- The store's contents: what its spaces hold here (nil on an instance without
-- them, a router).
local function store_figures()
    local messages = box.space.dialogs
    if messages == nil then
        return nil
    end
    local requests = box.space.dialogs_requests
    local inbox = box.space.dialogs_inbox
    return {
        messages = messages:len(),
        request_records = requests and requests:len() or 0,
        -- One per user per dialog: the store keeps no row per dialog (docs/metrics.md).
        inbox_entries = inbox and inbox:len() or nil,
        outbox = outbox_figures(),
    }
end

-- A copy of a table of tables, each a map when serialized (empty ones too).
local function snapshot(t)
    local c = setmetatable({}, {__serialize = 'map'})
    for k, v in pairs(t) do
        c[k] = type(v) == 'table' and snapshot(v) or v
    end
    return c
end

-- A router's counts (dialogs.routing), if this instance routes: a copy, as
-- they are now.
local function router_figures()
    local routing = package.loaded['dialogs.routing']
    if routing == nil or routing.state == nil or routing.state.bucket_count == nil then
        return nil
    end
    return snapshot(routing.counts)
end

-- Every figure of this instance, as one table (docs/metrics.md, "stats()"):
--   procs     {<name> = {calls, errors = {[code] = n}, latency_buckets = {n...},
--              latency_sum_s}}: the native counters, per procedure called;
--   latency_bounds_s  the histogram's upper bounds (latency_buckets has one
--              more, above the last; counts per bucket, not cumulative);
--   slow_ms   the slow-call threshold (nil: off);
--   store     {messages, request_records, inbox_entries, outbox = {backlog,
--              oldest_age_s, delivered, failures}} where the spaces are;
--   router    {calls = {<proc> = {ok, error}}, errors = {<proc> = {[code] = n}},
--              fallbacks = {<proc> = n}, retries = {<proc> = n}} on a router;
--   native_error  why the native counters are missing, if they are.
function M.stats()
    local native, err = call_native(M.STATS_FUNCTION, {})
    local s = {
        procs = setmetatable({}, {__serialize = 'map'}),
        store = store_figures(),
        router = router_figures(),
    }
    if native ~= nil then
        s.procs = native.procs or {}
        for _, p in pairs(s.procs) do
            -- Codes as keys: a map, also where it is empty.
            setmetatable(p.errors, {__serialize = 'map'})
        end
        s.latency_bounds_s = native.latency_bounds_s
        s.slow_ms = native.slow_ms
        if s.slow_ms == msgpack.NULL then
            s.slow_ms = nil
        end
    else
        s.native_error = err
    end
    return s
end

------------------------------------------------------------------------------
-- Collectors in `metrics`' default registry
------------------------------------------------------------------------------

-- The collectors' names and help texts (docs/metrics.md lists them).
M.NAMES = {
    calls = 'dialogs_calls_total',
    errors = 'dialogs_errors_total',
    duration = 'dialogs_call_duration_seconds',
    messages = 'dialogs_messages',
    request_records = 'dialogs_request_records',
    inbox_entries = 'dialogs_inbox_entries',
    outbox_backlog = 'dialogs_outbox_backlog',
    outbox_oldest_age = 'dialogs_outbox_oldest_age_seconds',
    outbox_delivered = 'dialogs_outbox_delivered_total',
    outbox_failures = 'dialogs_outbox_failures_total',
    router_calls = 'dialogs_router_calls_total',
    router_errors = 'dialogs_router_errors_total',
    router_fallbacks = 'dialogs_router_fallbacks_total',
    router_retries = 'dialogs_router_retries_total',
}

local HELP = {
    calls = 'Calls of each native procedure in this process',
    errors = 'Calls of each native procedure that ended with an error, by error code',
    duration = 'Server-side time of each native procedure call, seconds',
    messages = 'Messages stored on this instance',
    request_records = 'new_dialog request_id records kept on this instance',
    inbox_entries = 'Inbox entries on this instance: one per user per dialog',
    outbox_backlog = 'Inbox deliveries waiting in this storage\'s outbox',
    outbox_oldest_age = 'Age of the oldest waiting inbox delivery, seconds',
    outbox_delivered = 'Inbox deliveries made from this storage\'s outbox',
    outbox_failures = 'Failed attempts to deliver from this storage\'s outbox',
    router_calls = 'Client calls routed by this router, by outcome (ok or error)',
    router_errors = 'Client calls routed by this router that failed, by error code',
    router_fallbacks = 'Routed calls that took vshard\'s ordinary way after the direct one '
        .. 'did not answer',
    router_retries = 'Routed reads sent again after the bucket moved',
}

-- The global that holds the registered callback across reloads of this module.
local CALLBACK = '__dialogs_metrics_callback'

-- Sets a counter to a value read elsewhere (metrics' own way for counts kept
-- outside it: reset, then add).
local function set_counter(c, value, labels)
    c:reset(labels)
    c:inc(value, labels)
end

-- The histogram's three parts set from the native buckets. metrics 1.x has
-- no call that takes precomputed buckets; its histogram keeps them in three
-- counters (count_collector, sum_collector, bucket_collector, cumulative by
-- `le`), which are set here as observe() would have left them.
local function set_histogram(h, procs)
    for proc, p in pairs(procs) do
        local l = {proc = proc}
        set_counter(h.count_collector, p.calls, l)
        set_counter(h.sum_collector, p.latency_sum_s, l)
        local cumulative = 0
        for i, le in ipairs(h.buckets) do
            cumulative = cumulative + (p.latency_buckets[i] or 0)
            local bl = table.copy(l)
            bl.le = le
            set_counter(h.bucket_collector, cumulative, bl)
        end
    end
end

-- The histogram, made once the native bounds are known (the C function may
-- be registered after enable() runs: by the writable instance, by replication),
-- or nil and a warning where this metrics module keeps histograms otherwise.
local function histogram(c, metrics, bounds)
    if c.duration == nil and not c.duration_refused then
        local h = metrics.histogram(M.NAMES.duration, HELP.duration, table.copy(bounds))
        if h.bucket_collector == nil or h.count_collector == nil or h.sum_collector == nil
                or #h.buckets ~= #bounds + 1 then
            log.warn('dialogs: this metrics module keeps histograms otherwise: %s not '
                .. 'exported', M.NAMES.duration)
            c.duration_refused = true
        else
            c.duration = h
        end
    end
    return c.duration
end

-- Sets every collector `c` (made by enable()) from `s` (M.stats()).
local function update(c, metrics, s)
    for proc, p in pairs(s.procs) do
        set_counter(c.calls, p.calls, {proc = proc})
        for code, n in pairs(p.errors) do
            set_counter(c.errors, n, {proc = proc, code = tostring(code)})
        end
    end
    local h = s.latency_bounds_s and histogram(c, metrics, s.latency_bounds_s)
    if h then
        set_histogram(h, s.procs)
    end
    local store = s.store
    if store ~= nil then
        c.messages:set(store.messages)
        c.request_records:set(store.request_records)
        if store.inbox_entries ~= nil then
            c.inbox_entries:set(store.inbox_entries)
        end
        local o = store.outbox
        if o ~= nil then
            c.outbox_backlog:set(o.backlog or 0)
            c.outbox_oldest_age:set(o.oldest_age_s or 0)
            if o.delivered ~= nil then
                set_counter(c.outbox_delivered, o.delivered, {})
            end
            if o.failures ~= nil then
                set_counter(c.outbox_failures, o.failures, {})
            end
        end
    end
    local r = s.router
    if r ~= nil then
        for proc, outcome in pairs(r.calls) do
            set_counter(c.router_calls, outcome.ok, {proc = proc, outcome = 'ok'})
            set_counter(c.router_calls, outcome.error, {proc = proc, outcome = 'error'})
        end
        for proc, codes in pairs(r.errors) do
            for code, n in pairs(codes) do
                set_counter(c.router_errors, n, {proc = proc, code = tostring(code)})
            end
        end
        for proc, n in pairs(r.fallbacks) do
            set_counter(c.router_fallbacks, n, {proc = proc})
        end
        for proc, n in pairs(r.retries) do
            set_counter(c.router_retries, n, {proc = proc})
        end
    end
end

-- The `metrics` module, if this server has it (3.x bundles it; 2.x where it is
-- installed), else nil.
function M.metrics_module()
    local ok, metrics = pcall(require, 'metrics')
    if ok and type(metrics) == 'table' and type(metrics.register_callback) == 'function' then
        return metrics
    end
    return nil
end

-- Registers the store's collectors in `metrics`' default registry and the
-- callback that sets them at each collection (replacing one registered
-- before, by an earlier load of this module). Returns false where `metrics`
-- is absent: then stats() is the way.
function M.enable()
    local metrics = M.metrics_module()
    if metrics == nil then
        return false
    end
    -- Each collector is registered when it first gets a value, so that an
    -- instance exports only what it has (a router no messages, a store no
    -- routed calls); the histogram once the native bounds are known (histogram()).
    local c = setmetatable({}, {__index = function(made, key)
        local name = M.NAMES[key]
        if name == nil or key == 'duration' then
            return nil
        end
        local collector = name:match('_total$') and metrics.counter(name, HELP[key])
            or metrics.gauge(name, HELP[key])
        rawset(made, key, collector)
        return collector
    end})
    local old = rawget(_G, CALLBACK)
    if old ~= nil then
        metrics.unregister_callback(old)
    end
    local callback = function()
        update(c, metrics, M.stats())
    end
    rawset(_G, CALLBACK, callback)
    -- Run at every collection whatever metrics.include/exclude select: the
    -- filter then applies to the collectors, by name (metrics' own callbacks
    -- are marked so too).
    metrics.register_callback(callback, {default = true})
    return true
end

-- What init.lua and the roles do once the instance serves: the slow-call
-- threshold, and the collectors where `metrics` is. `setting` names the
-- threshold's setting in the log.
function M.start(slow_ms, setting)
    M.set_slow_ms(slow_ms, setting)
    local exported = M.enable()
    log.info('dialogs: metrics: %s', exported
        and 'in the metrics module\'s registry (docs/metrics.md)'
        or 'no metrics module: require(\'dialogs\').stats() (docs/metrics.md)')
end

return M

-- dialogs.recount_sharded: the inbox's recount over a sharded store, run on a
-- router (docs/sharding.md, "Recount"):
--
--   require('dialogs.router').recount()                 -- report only
--   require('dialogs.router').recount({repair = true})  -- and fix what drifted
--
-- The inbox entries and totals of every storage are compared with what the
-- messages say (the rules of the single store's recount): per user and dialog
-- the last message, the effective read cursor (the stored one, or the user's
-- own last message if that is newer), the unread count (messages to the user,
-- not from them, after that cursor), the read receipt (at least the user's
-- last incoming message, at most the peer's effective cursor), and per user
-- the totals (their sums). Deliveries still in an outbox make a difference that
-- is no drift: the recount first waits for every outbox to drain (up to
-- `timeout` seconds) and reports what is left (`backlog`); with a backlog it
-- does not repair.
--
-- It reads every storage master's entries into the router's memory (about 200
-- bytes each) and walks the messages one page of dialogs at a time: a tool for
-- an operator and the tests, run while no bucket moves. On the storages, the
-- reads are dialogs_storage.inbox_scan (setuid, granted to the routers' user,
-- called on each master directly) and the repairs dialogs_storage.inbox_repair
-- (through vshard, under the bucket's reference, one transaction per bucket).

local fiber = require('fiber')
local log = require('log')
local uuid = require('uuid')

local bucket = require('dialogs.bucket')

local M = {}

-- Rows (entries, totals) or messages a scan call reads at most.
M.PAGE = 2000
-- Seconds the recount waits for the outboxes to drain by default, how often it
-- looks, and how long one storage call may take.
M.DRAIN_TIMEOUT_S = 60
M.DRAIN_POLL_S = 0.1
M.CALL_TIMEOUT_S = 30
-- Drifted keys the report lists (`details`), at most.
M.DETAILS = 20

-- (Not uuid.NULL: a const value, which msgpack does not encode as a uuid on 2.x.)
local NIL_UUID = uuid.fromstr('00000000-0000-0000-0000-000000000000')
local NIL_STR = tostring(NIL_UUID)

-- Field numbers of dialogs_inbox (INBOX.md, "Model") and of a message.
local E = {user = 1, dialog = 2, peer = 3, last = 4, last_from = 5, last_text = 6,
           unread = 7, read = 8, peer_read = 9, bucket = 10}
local MSG = {id = 1, dialog = 2, from = 3, to = 4, text = 5, bucket = 7}

------------------------------------------------------------------------------
-- On a storage
------------------------------------------------------------------------------

-- A uuid field as its canonical string, box.NULL for the nil uuid (no cursor):
-- arrays with holes do not travel as arrays.
local function str(u)
    if u == nil then
        return box.NULL
    end
    local s = tostring(u)
    if s == NIL_STR then
        return box.NULL
    end
    return s
end

-- One page of what this replica set owns (rows of buckets active or pinned
-- here), after the key `after` (nil: from the start):
--   'entries': inbox entries {user, dialog, peer, last, last_from, last_text,
--              unread, read, peer_read} as strings (nil for a nil uuid);
--   'totals':  {user, unread_messages, unread_dialogs};
--   'facts':   per dialog, per user of its messages: {dialog, user, last,
--              last_from, last_text, peer, own_last, incoming_last, incoming}
--              where incoming lists the ids of messages to the user, not from
--              them, after their own last one (a page ends between dialogs);
--   'outbox':  the outbox's state, with `owned`: its rows of owned buckets.
-- Returns {rows, next} (next: the key to continue after, nil at the end).
function M.scan(kind, after, limit)
    -- box.NULL (a nil that travelled) counts as nil, and is not false.
    if after == nil then
        after = nil
    end
    limit = math.min(tonumber(limit) or M.PAGE, M.PAGE)
    local owned = bucket.owner()
    if kind == 'outbox' then
        local info = require('dialogs.outbox').info()
        local n = 0
        local space = box.space.dialogs_outbox
        if space ~= nil then
            for _, t in space:pairs() do
                if owned(t[2]) then
                    n = n + 1
                end
            end
        end
        info.owned = n
        return info
    end
    local rows = {}
    if kind == 'entries' then
        local space = box.space.dialogs_inbox
        local key = after and {uuid.fromstr(after[1]), uuid.fromstr(after[2])} or {}
        for _, t in space.index.pk:pairs(key, {iterator = after and 'GT' or 'GE'}) do
            if #rows >= limit then
                return {rows, {str(rows[#rows][1]), str(rows[#rows][2])}}
            end
            if owned(t[E.bucket]) then
                table.insert(rows, {str(t[E.user]), str(t[E.dialog]), str(t[E.peer]),
                    str(t[E.last]), str(t[E.last_from]), t[E.last_text], t[E.unread],
                    str(t[E.read]), str(t[E.peer_read])})
            end
        end
        return {rows, nil}
    elseif kind == 'totals' then
        local space = box.space.dialogs_inbox_totals
        local key = after and {uuid.fromstr(after)} or {}
        for _, t in space.index.pk:pairs(key, {iterator = after and 'GT' or 'GE'}) do
            if #rows >= limit then
                return {rows, rows[#rows][1]}
            end
            if owned(t[4]) then
                table.insert(rows, {str(t[1]), t[2], t[3]})
            end
        end
        return {rows, nil}
    elseif kind == 'facts' then
        return M.facts(after, limit, owned)
    end
    error(string.format('dialogs: inbox_scan: unknown kind %q', tostring(kind)), 0)
end

-- The 'facts' page: walks the messages by (dialog, id), whole dialogs only.
function M.facts(after, limit, owned)
    local index = box.space.dialogs.index.dialog_id_k
    local key = after and {uuid.fromstr(after)} or {}
    local rows, seen = {}, 0
    local dialog, users = nil, nil
    local function flush()
        if dialog == nil then
            return
        end
        for _, f in pairs(users) do
            table.insert(rows, f)
        end
    end
    for _, m in index:pairs(key, {iterator = after and 'GT' or 'GE'}) do
        local d = str(m[MSG.dialog])
        if d ~= dialog then
            if seen >= limit then
                flush()
                return {rows, dialog}
            end
            flush()
            dialog, users = d, {}
        end
        if owned(m[MSG.bucket]) then
            seen = seen + 1
            local id, from, to = str(m[MSG.id]), str(m[MSG.from]), str(m[MSG.to])
            for _, u in ipairs(from == to and {from} or {from, to}) do
                local f = users[u]
                if f == nil then
                    f = {d, u, box.NULL, box.NULL, box.NULL, box.NULL, box.NULL, box.NULL,
                         {}}
                    users[u] = f
                end
                -- Ids grow along the walk: this is the user's newest message so far.
                f[3], f[4], f[5] = id, from, m[MSG.text]
                f[6] = u == from and to or from
                if u == from then
                    f[7] = id
                    f[9] = {}
                else
                    f[8] = id
                    table.insert(f[9], id)
                end
            end
        end
    end
    flush()
    return {rows, nil}
end

-- Writes a repair to users of `bucket_id` (called through vshard.storage.call,
-- which holds the bucket's write reference): `changes` = {entries = {tuple...},
-- drop = {{user, dialog}...}, totals = {tuple...}}, uuids as strings (nil: the
-- nil uuid). One transaction; refuses a user of another bucket. Returns the
-- number of rows written.
function M.repair(bucket_id, changes)
    local count = bucket.stored_count()
    local function u(s)
        return s == nil and NIL_UUID or uuid.fromstr(s)
    end
    local function check(user)
        if bucket.of(user, count) ~= bucket_id then
            error(string.format('dialogs: inbox_repair: user %s is not in bucket %d', user,
                bucket_id), 0)
        end
    end
    local inbox, totals = box.space.dialogs_inbox, box.space.dialogs_inbox_totals
    local n = 0
    box.begin()
    local ok, err = pcall(function()
        for _, e in ipairs(changes.entries or {}) do
            check(e[1])
            inbox:replace{u(e[1]), u(e[2]), u(e[3]), u(e[4]), u(e[5]), e[6] or '', e[7],
                          u(e[8]), u(e[9]), bucket_id}
            n = n + 1
        end
        for _, k in ipairs(changes.drop or {}) do
            check(k[1])
            inbox:delete{u(k[1]), u(k[2])}
            n = n + 1
        end
        for _, t in ipairs(changes.totals or {}) do
            check(t[1])
            totals:replace{u(t[1]), t[2], t[3], bucket_id}
            n = n + 1
        end
    end)
    if not ok then
        box.rollback()
        error(err, 0)
    end
    box.commit()
    return n
end

------------------------------------------------------------------------------
-- On a router
------------------------------------------------------------------------------

-- The larger of two ids as strings (nil: none); canonical lowercase uuid
-- strings order as the uuids do.
local function max_id(a, b)
    if a == nil then
        return b
    end
    if b == nil or a >= b then
        return a
    end
    return b
end

local function call_master(replicaset, name, args)
    local res, err = replicaset:callrw(name, args, {timeout = M.CALL_TIMEOUT_S})
    if err ~= nil then
        error(string.format('dialogs: recount: %s on replica set %s: %s', name,
            tostring(replicaset.name or replicaset.uuid or replicaset.id),
            tostring(type(err) == 'table' and err.message or err)), 0)
    end
    return res
end

local function scan_all(replicasets, kind, each)
    local name = require('dialogs.storage').SCAN_FUNCTION
    for _, rs in pairs(replicasets) do
        local after = nil
        repeat
            local page = call_master(rs, name, {kind, after, M.PAGE})
            for _, row in ipairs(page[1]) do
                each(row)
            end
            after = page[2]
            if after == box.NULL then
                after = nil
            end
        until after == nil
    end
end

-- Rows still to deliver in the outboxes of owned buckets, all replica sets.
local function backlog(replicasets)
    local n = 0
    local name = require('dialogs.storage').SCAN_FUNCTION
    for _, rs in pairs(replicasets) do
        n = n + call_master(rs, name, {'outbox'}).owned
    end
    return n
end

local function null(v)
    if v == box.NULL then
        return nil
    end
    return v
end

-- The recount over the cluster a vshard router object `router` reaches.
-- opts: repair (bool), timeout (seconds to wait for the outboxes to drain).
-- Returns {entries, wrong, missing, extra, totals_wrong, backlog, repaired,
-- details}.
function M.run(router, opts)
    opts = opts or {}
    local replicasets = router:routeall()
    local deadline = fiber.clock() + (opts.timeout or M.DRAIN_TIMEOUT_S)
    local left = backlog(replicasets)
    while left > 0 and fiber.clock() < deadline do
        fiber.sleep(M.DRAIN_POLL_S)
        left = backlog(replicasets)
    end

    local entries, totals = {}, {}
    scan_all(replicasets, 'entries', function(r)
        local e = {}
        for i = 1, 9 do
            e[i] = null(r[i])
        end
        entries[e[1] .. '/' .. e[2]] = e
    end)
    scan_all(replicasets, 'totals', function(r)
        totals[r[1]] = {r[2], r[3]}
    end)

    local report = {entries = 0, wrong = 0, missing = 0, extra = 0, totals_wrong = 0,
                    backlog = left, repaired = false, details = {}}
    local function detail(kind, key)
        if #report.details < M.DETAILS then
            table.insert(report.details, kind .. ' ' .. key)
        end
    end
    -- Per bucket of a user: what a repair writes there.
    local fixes = {}
    local count = router:bucket_count()
    local function fix(user, what, row, size)
        local b = bucket.of(user, count)
        fixes[b] = fixes[b] or {entries = {}, drop = {}, totals = {}}
        -- Arrays with holes do not travel as arrays.
        for i = 1, size do
            if row[i] == nil then
                row[i] = box.NULL
            end
        end
        table.insert(fixes[b][what], row)
    end
    local expected_totals, matched = {}, {}

    -- A page of facts covers whole dialogs: the effective cursors of every user
    -- of a dialog are known before its receipts are checked.
    local by_dialog = {}
    local function check_dialog(facts)
        local eff = {}
        for _, f in ipairs(facts) do
            local e = entries[f[2] .. '/' .. f[1]]
            eff[f[2]] = max_id(e and e[8] or nil, null(f[7]))
        end
        for _, f in ipairs(facts) do
            local d, u = f[1], f[2]
            local key = u .. '/' .. d
            local e = entries[key]
            matched[key] = true
            report.entries = report.entries + 1
            local read = eff[u]
            local unread = 0
            for _, id in ipairs(f[9]) do
                if read == nil or id > read then
                    unread = unread + 1
                end
            end
            -- The receipt: at least the last incoming message (its sender had
            -- read it), at most the furthest effective cursor of another user.
            local lower, upper = null(f[8]), nil
            for other, r in pairs(eff) do
                if other ~= u then
                    upper = max_id(upper, r)
                end
            end
            local peer_read = e and e[9] or upper
            local fixed_peer_read = max_id(peer_read, lower)
            if upper ~= nil and fixed_peer_read ~= nil and fixed_peer_read > upper then
                fixed_peer_read = max_id(upper, lower)
            end
            local want = {u, d, null(f[6]), null(f[3]), null(f[4]), f[5], unread, read,
                          fixed_peer_read}
            local t = expected_totals[u] or {0, 0}
            t[1], t[2] = t[1] + unread, t[2] + (unread > 0 and 1 or 0)
            expected_totals[u] = t
            if e == nil then
                report.missing = report.missing + 1
                detail('missing', key)
                fix(u, 'entries', want, 9)
            else
                local same = true
                for i = 3, 9 do
                    same = same and e[i] == want[i]
                end
                if not same then
                    report.wrong = report.wrong + 1
                    detail('wrong', key)
                    fix(u, 'entries', want, 9)
                end
            end
        end
    end
    local function flush_dialog()
        for _, facts in pairs(by_dialog) do
            check_dialog(facts)
        end
        by_dialog = {}
    end
    scan_all(replicasets, 'facts', function(f)
        local facts = by_dialog[f[1]]
        if facts == nil then
            facts = {}
            by_dialog[f[1]] = facts
        end
        table.insert(facts, f)
    end)
    flush_dialog()

    for key, e in pairs(entries) do
        if not matched[key] then
            report.extra = report.extra + 1
            detail('extra', key)
            fix(e[1], 'drop', {e[1], e[2]}, 2)
        end
    end
    local users = {}
    for u in pairs(totals) do
        users[u] = true
    end
    for u in pairs(expected_totals) do
        users[u] = true
    end
    for u in pairs(users) do
        local want = expected_totals[u] or {0, 0}
        local have = totals[u] or {0, 0}
        if want[1] ~= have[1] or want[2] ~= have[2] then
            report.totals_wrong = report.totals_wrong + 1
            detail('totals', u)
            fix(u, 'totals', {u, want[1], want[2]}, 3)
        end
    end

    local drift = report.wrong + report.missing + report.extra + report.totals_wrong
    if opts.repair and drift > 0 then
        if left > 0 then
            log.warn('dialogs: recount: %d deliveries still in the outboxes: not repaired', left)
        else
            local name = require('dialogs.storage').FUNCTIONS.inbox_repair
            for b, changes in pairs(fixes) do
                local _, err = router:callrw(b, name, {b, changes},
                    {timeout = M.CALL_TIMEOUT_S})
                if err ~= nil then
                    error(string.format('dialogs: recount: repair of bucket %d: %s', b,
                        tostring(type(err) == 'table' and err.message or err)), 0)
                end
            end
            report.repaired = true
        end
    end
    log.info('dialogs: recount: %d entries, %d wrong, %d missing, %d extra, %d totals '
        .. 'wrong, %d deliveries in the outboxes%s', report.entries, report.wrong,
        report.missing, report.extra, report.totals_wrong, left,
        report.repaired and ', repaired' or '')
    return report
end

return M

-- dialogs.inbox: the operator's recount of the inboxes of one store (a replica
-- set without vshard): what every inbox entry and every user's totals must be,
-- worked out from the stored messages alone, compared with what is stored and,
-- with repair, made so.
--
--   require('dialogs.inbox').recount()                 -- check only
--   require('dialogs.inbox').recount({repair = true})  -- check and fix
--   require('dialogs').recount(...)                    -- the same
--   scripts/recount ADMIN_SOCKET [--repair]            -- over the admin console
--
-- It is the check of the native rules (src/inbox/), so it shares no code with
-- them: the expected state is computed here, in Lua, from its definition.
-- For a user U and a dialog D in which U sent or received a message:
--   last message      the greatest id among those messages: last_id, last_from,
--                     last_text; peer_id the other of its sender and recipient
--                     (U for a note to self);
--   read_id           max(the stored read_id, U's last own message in D): sending
--                     reads the dialog, mark_read may have read further;
--   unread            the messages of D to U, not from U, with an id above read_id;
--   peer_read_id      the read receipt: at least the last message of D to U from
--                     someone else (whoever sent a message has read up to it) and
--                     not ahead of the greatest read_id of the other users of D
--                     (a receipt never runs ahead of the reader). On one store it
--                     equals the peer's read_id; an entry below it is counted
--                     in receipts_behind (an outbox in flight, on a sharded
--                     store), not as wrong;
--   bucket_id         the bucket of U.
-- An entry for a (U, D) with no such message (a placeholder included) is extra.
-- A user's totals: unread_messages = the sum of the expected unread counts,
-- unread_dialogs = how many of them are not 0; a user without a totals row has
-- 0 and 0, and a row at 0 and 0 is right whether or not the user has entries.
--
-- How it runs. Pass 1 walks the messages dialog by dialog (index dialog_id_k) and
-- checks the entries of each dialog's users; pass 2 walks the entries user by
-- user, finds the extra ones and checks each user's totals. Each dialog and each
-- user is checked against one state of the data, even while clients write: a
-- user's entries and totals row are read without a yield; a dialog's messages
-- are walked M.BATCH at a time with yields between (a new message only ever
-- comes after the others, so the walk sees them all), and its users' entries
-- are checked without a yield once the walk has reached the end; the walk starts
-- again if a read cursor it counted from moved meanwhile (a mark_read), and the
-- third time reads the dialog in one go. The passes yield every M.BATCH rows,
-- and at the latest every YIELD_EVERY_S between two dialogs (users).
-- With repair, what a dialog's (user's) check finds wrong is replaced in the
-- same transaction as that check read it, so a repair never writes over a
-- change it has not seen: it is safe while clients write, on the writable
-- instance. Entries are fixed in pass 1, totals in pass 2: if the recount stops
-- in between (an error, a restart), run it again. A check without repair reads
-- only and runs on any instance; while clients write, the totals it expects for
-- a user whose entry was wrong and changed between the two passes can be off:
-- run it again to confirm a difference.
--
-- Refused on a vshard storage (its inboxes hold deliveries of messages stored on
-- other storages: the cluster's recount runs on a router) and before the inboxes
-- are built (schema migration 5).

local clock = require('clock')
local fiber = require('fiber')
local log = require('log')
local uuid = require('uuid')

local bucket = require('dialogs.bucket')
local capabilities = require('dialogs.capabilities')
local schema = require('dialogs.schema')

local M = {}

-- Messages (pass 1) or entries (pass 2) read between two yields; with repair
-- also the most one transaction checks.
M.BATCH = 1000
-- Differences described one by one in the report (the rest are counted).
M.SAMPLES = 10
-- A progress line at most this often, seconds.
local PROGRESS_EVERY_S = 10
-- A dialog is walked in chunks at most this many times less one (each walk is
-- void if a read cursor moved past it meanwhile), then in one go.
local DIALOG_WALKS = 3
-- The recount yields every M.BATCH rows, and at the latest after this long
-- without a yield (between two dialogs or users), seconds.
local YIELD_EVERY_S = 0.05
-- Where the server stops a fiber that runs too long without a yield (its
-- slice: 1 s of wall-clock time, which a busy machine can stretch any work
-- to), the recount's own slice, seconds: it yields by itself (above), and a
-- dialog read in one go or a user's entries and totals must not be cut short.
local HOLD_SLICE_S = 3600

-- The nil uuid, the stored "none" of every uuid field of an entry.
local NONE = uuid.NULL:str()
M.NONE = NONE

-- Fields of a message, an inbox entry and a totals row (docs/inbox.md, "The model").
local MSG_ID, MSG_DIALOG, MSG_FROM, MSG_TO, MSG_TEXT = 1, 2, 3, 4, 5
local E_USER, E_DIALOG, E_PEER, E_LAST_ID, E_LAST_FROM, E_LAST_TEXT, E_UNREAD, E_READ,
    E_PEER_READ, E_BUCKET = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local T_USER, T_MESSAGES, T_DIALOGS, T_BUCKET = 1, 2, 3, 4

-- The fields an entry is compared on, in tuple order after its key.
local ENTRY_FIELDS = {
    {'peer_id', E_PEER}, {'last_id', E_LAST_ID}, {'last_from', E_LAST_FROM},
    {'last_text', E_LAST_TEXT}, {'unread', E_UNREAD}, {'read_id', E_READ},
    {'peer_read_id', E_PEER_READ}, {'bucket_id', E_BUCKET},
}

-- Canonical uuid strings order as the uuids do (byte by byte), on every server
-- (2.6 cannot compare uuid values in Lua).
local function max_id(a, b)
    return a > b and a or b
end

local function str(v)
    if v == nil then
        return NONE
    end
    return v:str()
end

------------------------------------------------------------------------------
-- The expected entries of one dialog (pure: strings and numbers in, tables out)
------------------------------------------------------------------------------

-- An accumulator of one dialog's messages, fed in id order with canonical uuid
-- strings: add(id, from, to, text), then entries() gives the expected entry of
-- every user who sent or received one of them, in the order they first
-- appeared: {user_id, peer_id, last_id, last_from, last_text, unread, read_id,
-- peer_read_min, peer_read_max} (the receipt's bounds, see the file's head).
-- `stored_read(user)` is the read_id stored in that user's entry (nil or NONE:
-- none), asked once per user.
function M.dialog_accumulator(stored_read)
    local users, order = {}, {}
    local function state(user)
        local s = users[user]
        if s == nil then
            s = {read = stored_read(user) or NONE, own = NONE, to_me = NONE, unread = 0}
            users[user] = s
            table.insert(order, user)
        end
        return s
    end
    local acc = {}
    function acc.add(id, from, to, text)
        local s = state(from)
        s.last_id, s.last_from, s.last_text, s.peer = id, from, text, to
        -- Every earlier message was delivered first: sending reads them.
        s.own, s.unread = id, 0
        if to ~= from then
            s = state(to)
            s.last_id, s.last_from, s.last_text, s.peer = id, from, text, from
            s.to_me = id
            if id > s.read then
                s.unread = s.unread + 1
            end
        end
    end
    function acc.entries()
        -- The two greatest read cursors, so that each user's "the others'
        -- greatest" is one comparison.
        local first, first_user, second = NONE, nil, NONE
        for _, user in ipairs(order) do
            local s = users[user]
            s.read = max_id(s.read, s.own)
            if s.read > first then
                first, first_user, second = s.read, user, first
            elseif s.read > second then
                second = s.read
            end
        end
        local out = {}
        for i, user in ipairs(order) do
            local s = users[user]
            out[i] = {
                user_id = user, peer_id = s.peer, last_id = s.last_id,
                last_from = s.last_from, last_text = s.last_text, unread = s.unread,
                read_id = s.read, peer_read_min = s.to_me,
                peer_read_max = user == first_user and second or first,
            }
        end
        return out
    end
    return acc
end

-- The stored entry (a tuple, or a table with the tuple's fields) compared with
-- the expected one (from dialog_accumulator, with bucket_id added): the
-- differences as {field, stored, expected} in field order, and whether the
-- receipt is behind the peer (not a difference). The expected peer_read_id is the
-- stored one when it lies within its bounds, else the upper bound.
function M.compare_entry(stored, want)
    local diffs = {}
    local got = {}
    for _, f in ipairs(ENTRY_FIELDS) do
        local v = stored[f[2]]
        if type(v) == 'cdata' then
            v = str(v)
        end
        got[f[1]] = v
    end
    local peer_read = got.peer_read_id or NONE
    local within = peer_read >= want.peer_read_min and peer_read <= want.peer_read_max
    want.peer_read_id = within and peer_read or want.peer_read_max
    for _, f in ipairs(ENTRY_FIELDS) do
        local name = f[1]
        local g, w = got[name], want[name]
        if name ~= 'last_text' and name ~= 'unread' and name ~= 'bucket_id' then
            g = g or NONE
        end
        if g ~= w then
            table.insert(diffs, {name, g, w})
        end
    end
    return diffs, within and peer_read < want.peer_read_max
end

-- One line for a sample of the report.
function M.describe(what, user, dialog, diffs)
    local parts = {}
    for _, d in ipairs(diffs or {}) do
        table.insert(parts, string.format('%s %s, expected %s', d[1], tostring(d[2]),
            tostring(d[3])))
    end
    local line = string.format('%s: user %s, dialog %s', what, user, dialog)
    if #parts > 0 then
        line = line .. ': ' .. table.concat(parts, '; ')
    end
    return line
end

------------------------------------------------------------------------------
-- The recount
------------------------------------------------------------------------------

-- Lets the current fiber run without a yield until its next one (the recount
-- calls it after every yield of its own): a server with fiber slices (2.11+)
-- would stop it after 1 s ("fiber slice is exceeded"); older ones never do.
local function hold_without_yield()
    if capabilities.supports_fiber_slice() then
        fiber.set_slice({warn = HOLD_SLICE_S, err = HOLD_SLICE_S})
    end
end

local function refuse(fmt, ...)
    error(string.format('dialogs: recount: ' .. fmt, ...), 0)
end

-- The entry tuple of an expected entry.
local function entry_tuple(user, dialog, want)
    return {
        uuid.fromstr(user), dialog, uuid.fromstr(want.peer_id), uuid.fromstr(want.last_id),
        uuid.fromstr(want.last_from), want.last_text, want.unread, uuid.fromstr(want.read_id),
        uuid.fromstr(want.peer_read_id), want.bucket_id,
    }
end

-- Opens the transaction a repair writes in, if none is open (Recount:step
-- commits it).
local function write()
    if not box.is_in_txn() then
        box.begin()
    end
end

-- Runs the passes, with repair in transactions of at most M.BATCH reads.
local Recount = {}
Recount.__index = Recount

function Recount:sample(line)
    if #self.report.samples < M.SAMPLES then
        table.insert(self.report.samples, line)
    end
end

-- Commits the repairs so far and yields (logging progress now and then).
function Recount:pause()
    if box.is_in_txn() then
        box.commit()
    end
    local now = clock.monotonic()
    if now - self.last_progress >= PROGRESS_EVERY_S then
        self.last_progress = now
        log.info('dialogs: recount: %d messages in %d dialogs, %d entries checked so far',
            self.report.messages, self.report.dialogs, self.report.entries)
    end
    fiber.yield()
    self.since_yield, self.yielded_at = 0, clock.monotonic()
    hold_without_yield()
end

-- Called after each dialog (user) with the rows it read: pauses once M.BATCH
-- rows were read since the last time, or YIELD_EVERY_S passed.
function Recount:step(rows)
    self.since_yield = self.since_yield + rows
    if self.since_yield >= M.BATCH or clock.monotonic() - self.yielded_at >= YIELD_EVERY_S then
        self:pause()
    end
end

-- The expected totals change of a user whose entry was wrong or missing (what
-- pass 2 adds to the stored entries' sums when it does not repair).
function Recount:shift(user, stored_unread, unread)
    local d = self.shifts[user]
    if d == nil then
        d = {messages = 0, dialogs = 0}
        self.shifts[user] = d
    end
    d.messages = d.messages + unread - stored_unread
    d.dialogs = d.dialogs + (unread > 0 and 1 or 0) - (stored_unread > 0 and 1 or 0)
end

-- Walks the messages of `dialog` into its expected entries, M.BATCH messages
-- between yields (in one go, without a yield, when `whole`), then checks its
-- users' entries (and repairs them) without a yield, against the state the walk
-- ended on: messages are only ever added after the others, so the walk has seen
-- every message there is. The unread counts were worked out from the read
-- cursors stored when the walk met each user: if one has moved past what the
-- walk accounts for (a mark_read meanwhile), nothing is counted and the result
-- is false (walk again). The number of messages walked.
function Recount:walk_dialog(dialog, whole)
    local acc = M.dialog_accumulator(function(user)
        local t = self.inbox:get{uuid.fromstr(user), dialog}
        return t and str(t[E_READ])
    end)
    local last, messages = nil, 0
    while true do
        local key, iterator = {dialog}, 'EQ'
        if last ~= nil then
            key, iterator = {dialog, last}, 'GT'
        end
        local n = 0
        for _, m in self.by_dialog:pairs(key, {iterator = iterator}) do
            if m[MSG_DIALOG] ~= dialog or (n == M.BATCH and not whole) then
                break
            end
            acc.add(m[MSG_ID]:str(), m[MSG_FROM]:str(), m[MSG_TO]:str(), m[MSG_TEXT])
            last, n = m[MSG_ID], n + 1
        end
        messages = messages + n
        if whole or n < M.BATCH then
            break
        end
        self:pause()
    end
    local wants, stored = acc.entries(), {}
    for i, want in ipairs(wants) do
        local t = self.inbox:get{uuid.fromstr(want.user_id), dialog}
        if t ~= nil and str(t[E_READ]) > want.read_id then
            return false, messages
        end
        stored[i] = t
    end
    local report = self.report
    local dialog_str = dialog:str()
    for i, want in ipairs(wants) do
        local user = want.user_id
        want.bucket_id = bucket.of(user, self.bucket_count)
        report.entries = report.entries + 1
        local t = stored[i]
        local diffs, behind
        if t == nil then
            report.missing = report.missing + 1
            want.peer_read_id = want.peer_read_max
            self:sample(M.describe('missing', user, dialog_str))
        else
            diffs, behind = M.compare_entry(t, want)
            if behind then
                report.receipts_behind = report.receipts_behind + 1
            end
            if #diffs > 0 then
                report.wrong = report.wrong + 1
                self:sample(M.describe('wrong', user, dialog_str, diffs))
            end
        end
        if t == nil or #diffs > 0 then
            if self.repair then
                write()
                self.inbox:replace(entry_tuple(user, dialog, want))
            else
                self:shift(user, t and t[E_UNREAD] or 0, want.unread)
            end
        end
    end
    report.messages = report.messages + messages
    return true, messages
end

-- Pass 1: one dialog, from its first message `first`: walked in chunks
-- DIALOG_WALKS - 1 times at most, then in one go. The next dialog's first
-- message.
function Recount:check_dialog(first)
    local dialog = first[MSG_DIALOG]
    for walk = 1, DIALOG_WALKS do
        local done, messages = self:walk_dialog(dialog, walk == DIALOG_WALKS)
        self:step(messages)
        if done then
            break
        end
        self.report.walked_again = self.report.walked_again + 1
    end
    self.report.dialogs = self.report.dialogs + 1
    return self.by_dialog:select({dialog}, {iterator = 'GT', limit = 1})[1]
end

-- Does `user` take part in `dialog` (sent or received one of its messages)?
-- The entry's last message answers at once for every entry that is right.
function Recount:takes_part(user, dialog, last_id)
    local m = last_id ~= nil and not last_id:isnil() and self.messages:get{last_id} or nil
    if m ~= nil and m[MSG_DIALOG] == dialog and (m[MSG_FROM] == user or m[MSG_TO] == user) then
        return true
    end
    for _, msg in self.by_dialog:pairs({dialog}, {iterator = 'EQ'}) do
        if msg[MSG_FROM] == user or msg[MSG_TO] == user then
            return true
        end
    end
    return false
end

-- Pass 2: a user's totals row against `messages` and `dialogs`, the expected
-- counts.
function Recount:check_totals(user, messages, dialogs)
    local report = self.report
    report.users = report.users + 1
    local t = self.totals:get{user}
    local user_bucket = bucket.of(user, self.bucket_count)
    local got_m, got_d = t and t[T_MESSAGES] or 0, t and t[T_DIALOGS] or 0
    local right = got_m == messages and got_d == dialogs
        and (t == nil or t[T_BUCKET] == user_bucket)
    if right then
        return
    end
    report.totals_wrong = report.totals_wrong + 1
    self:sample(string.format('totals: user %s: unread_messages %d, unread_dialogs %d, '
        .. 'expected %d, %d', user:str(), got_m, got_d, messages, dialogs))
    if self.repair then
        write()
        self.totals:replace{user, messages, dialogs, user_bucket}
    end
end

-- Pass 2: one user's entries and totals, from its first entry `first`; the next
-- user's first entry.
function Recount:check_user(first)
    local user = first[E_USER]
    local user_str = user:str()
    local messages, dialogs, rows = 0, 0, 0
    for _, e in self.inbox.index.activity:pairs({user}, {iterator = 'EQ'}) do
        rows = rows + 1
        -- A placeholder, or an entry pass 1 found wrong, of a user who does take
        -- part: counted there.
        if not self:takes_part(user, e[E_DIALOG], e[E_LAST_ID]) then
            self.report.extra = self.report.extra + 1
            self:sample(M.describe('extra', user_str, e[E_DIALOG]:str()))
            if self.repair then
                write()
                self.inbox:delete{user, e[E_DIALOG]}
            end
        else
            messages = messages + e[E_UNREAD]
            dialogs = dialogs + (e[E_UNREAD] > 0 and 1 or 0)
        end
    end
    local shift = self.shifts[user_str]
    if shift ~= nil then
        messages, dialogs = messages + shift.messages, dialogs + shift.dialogs
        self.shifts[user_str] = nil
    end
    self:check_totals(user, messages, dialogs)
    self:step(rows)
    return self.inbox.index.activity:select({user}, {iterator = 'GT', limit = 1})[1]
end

-- Pass 2, the rest: totals rows of users without entries, and users whose
-- entries are all missing (expected counts without a single stored entry).
function Recount:check_users_without_entries()
    local t = self.totals.index.pk:min()
    while t ~= nil do
        local user = t[T_USER]
        if self.inbox.index.activity:select({user}, {limit = 1})[1] == nil then
            local shift = self.shifts[user:str()]
            self.shifts[user:str()] = nil
            self:check_totals(user, shift and shift.messages or 0, shift and shift.dialogs or 0)
        end
        self:step(1)
        t = self.totals.index.pk:select({user}, {iterator = 'GT', limit = 1})[1]
    end
    for user, shift in pairs(self.shifts) do
        self:check_totals(uuid.fromstr(user), shift.messages, shift.dialogs)
    end
    self.shifts = {}
end

function Recount:run()
    hold_without_yield()
    local m = self.by_dialog:min()
    while m ~= nil do
        m = self:check_dialog(m)
    end
    if box.is_in_txn() then
        box.commit()
    end
    local e = self.inbox.index.activity:min()
    while e ~= nil do
        e = self:check_user(e)
    end
    self:check_users_without_entries()
    if box.is_in_txn() then
        box.commit()
    end
end

-- How many differences a report counts (receipts behind are not: a sharded
-- store's outbox may still carry them).
function M.drift(report)
    return report.wrong + report.missing + report.extra + report.totals_wrong
end

-- Checks every inbox entry and totals row of this store against the messages
-- (the file's head says what is expected and how it runs). opts.repair: fix
-- what differs (the writable instance only). Returns the report:
--   messages, dialogs   read in pass 1;
--   entries             expected entries (one per user and dialog);
--   wrong, missing      entries that differ, that are absent;
--   extra               entries without any message of their user in their dialog;
--   users               users whose totals were checked;
--   totals_wrong        totals rows that differ (or are absent where not 0);
--   receipts_behind     entries whose read receipt is behind the peer's cursor;
--   walked_again        walks of a long dialog started again (a read cursor moved
--                       past it meanwhile);
--   repaired            whether what differed was fixed;
--   samples             the first few differences, one line each;
--   seconds             how long it took.
-- Run it as admin (it reads and writes the store's spaces directly).
function M.recount(opts)
    opts = opts or {}
    if type(opts) ~= 'table' then
        refuse('expected a table of options {repair = true|false}, got %s', type(opts))
    end
    for k in pairs(opts) do
        if k ~= 'repair' then
            refuse('unknown option %s (known: repair)', tostring(k))
        end
    end
    if opts.repair ~= nil and type(opts.repair) ~= 'boolean' then
        refuse('repair: expected true or false, got %s', type(opts.repair))
    end
    local repair = opts.repair == true
    if box.space._bucket ~= nil then
        refuse('this instance is a vshard storage: its inboxes hold the messages of every '
            .. 'storage; run the recount of the sharded store on a router')
    end
    local inbox, totals = box.space.dialogs_inbox, box.space.dialogs_inbox_totals
    if inbox == nil or totals == nil or not schema.inbox_built() then
        refuse('the inboxes are not built yet (the schema migration that builds them has '
            .. 'not finished): run it when it has')
    end
    if repair and box.info.ro then
        refuse('repair writes: run it on the writable instance (this one is read-only)')
    end
    if box.is_in_txn() then
        refuse('called inside a transaction: it commits its own')
    end
    local self = setmetatable({
        repair = repair,
        messages = box.space.dialogs,
        by_dialog = box.space.dialogs.index.dialog_id_k,
        inbox = inbox,
        totals = totals,
        bucket_count = bucket.stored_count() or bucket.DEFAULT_COUNT,
        shifts = {},
        since_yield = 0,
        yielded_at = clock.monotonic(),
        last_progress = clock.monotonic(),
        report = {
            messages = 0, dialogs = 0, entries = 0, wrong = 0, missing = 0, extra = 0,
            users = 0, totals_wrong = 0, receipts_behind = 0, walked_again = 0,
            repaired = repair,
            samples = setmetatable({}, {__serialize = 'seq'}),
        },
    }, Recount)
    local started = clock.monotonic()
    log.info('dialogs: recount%s started', repair and ' with repair' or '')
    local ok, err = pcall(self.run, self)
    if box.is_in_txn() then
        box.rollback()
    end
    if not ok then
        log.error('dialogs: recount failed: %s', tostring(err))
        error(err, 0)
    end
    local r = self.report
    r.seconds = clock.monotonic() - started
    log.info('dialogs: recount%s: %d messages in %d dialogs; %d entries: %d wrong, %d '
        .. 'missing, %d extra; %d users: %d totals wrong; %d receipts behind (%.1f s)',
        repair and ' with repair' or '', r.messages, r.dialogs, r.entries, r.wrong, r.missing,
        r.extra, r.users, r.totals_wrong, r.receipts_behind, r.seconds)
    return r
end

return M

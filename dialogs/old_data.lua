-- dialogs.old_data: a stopped instance's data directory, read offline, file by
-- file, with the `xlog` module (scripts/rejoin): no Tarantool is started on it and
-- nothing in it is written.
--
--   read(dir)                   its uuid, replica id, vclock, spaces and WAL files
--   diverged_messages(d, from)  the messages its WAL holds after its lsn `from`
--   refuse_if_in_use(dir)       an error when a process has a file open under dir
--   file_meta(path)             a WAL or snapshot file's Instance and VClock header
--
-- The instance's uuid comes from the files' headers, its replica id from its own
-- copy of _cluster, its vclock from the newest file header and every WAL row
-- after it. Every failure is an error (a string naming the file or directory).

local fio = require('fio')
local xlog = require('xlog')

local M = {}

-- System spaces read from the data directory.
local SPACE_SPACE = 280 -- _space: {id, owner, name, ...}
local SPACE_CLUSTER = 320 -- _cluster: {replica id, instance uuid}
-- Spaces below this id are system spaces; a snapshot lists them first.
local FIRST_USER_SPACE = 512
M.MESSAGES = 'dialogs'
M.REQUESTS = 'dialogs_requests'
-- How many bytes of a WAL or snapshot file hold its text header, at most.
local FILE_HEADER_MAX = 4096

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

-- Pids of the processes that have a file open under `dir` (an instance still
-- running on it), each with one such path. Best effort: processes of other users
-- are not visible to a non-root caller. This process (which reads the files) does
-- not count.
local function processes_using(dir)
    local pids, self = {}, fio.readlink('/proc/self')
    for _, fd in ipairs(fio.glob('/proc/[0-9]*/fd/*') or {}) do
        local pid = fd:match('^/proc/(%d+)/')
        local target = pid ~= self and fio.readlink(fd) or nil
        if target ~= nil and target:sub(1, #dir + 1) == dir .. '/' then
            pids[pid] = target
        end
    end
    return pids
end

function M.refuse_if_in_use(dir)
    for pid, path in pairs(processes_using(dir)) do
        fail('process %s has %s open: stop the old instance first '
            .. '(this tool reads a stopped instance\'s files)', pid, path)
    end
end

-- A WAL or snapshot file's text header: {instance = uuid string, vclock = map}.
function M.file_meta(path)
    local f = io.open(path, 'rb')
    if f == nil then
        fail('cannot open %s', path)
    end
    local head = f:read(FILE_HEADER_MAX) or ''
    f:close()
    head = (head:match('^(.-\n)\n') or '')
    local instance = head:match('\nInstance: ([%x%-]+)\n')
    local vclock_text = head:match('\nVClock: ({[^}\n]*})\n')
    if instance == nil or vclock_text == nil then
        fail('%s: not a Tarantool WAL or snapshot file (no Instance/VClock header)', path)
    end
    local vclock = {}
    for id, lsn in vclock_text:gmatch('(%d+):%s*(%d+)') do
        vclock[tonumber(id)] = tonumber(lsn)
    end
    return {instance = instance, vclock = vclock}
end

-- The numbered files of one kind, oldest first. A file still named
-- `.inprogress` was never completed and holds nothing recovery would use.
local function data_files(dir, ext)
    local files = fio.glob(fio.pathjoin(dir, '*.' .. ext)) or {}
    table.sort(files)
    return files
end

local function max_into(v, id, lsn)
    if id ~= nil and id ~= 0 and lsn ~= nil and lsn > (v[id] or 0) then
        v[id] = lsn
    end
end

-- Every row of the WAL files, oldest first: f(header, body). A damaged tail of the
-- newest file (a row cut by the kill) ends the reading with a warning on stderr;
-- damage anywhere else fails.
local function each_wal_row(xlogs, f)
    for i, path in ipairs(xlogs) do
        local ok, err = pcall(function()
            for _, row in xlog.pairs(path) do
                f(row.HEADER or {}, row.BODY or {})
            end
        end)
        if not ok then
            if i < #xlogs then
                fail('%s: %s', path, tostring(err))
            end
            io.stderr:write(string.format('rejoin: warning: %s ends in a row that cannot '
                .. 'be read (%s); the rows before it are used\n', path, tostring(err)))
        end
    end
end

-- What a stopped instance's data directory holds: {dir, instance (uuid string),
-- id (its replica id), vclock, spaces (name -> id), members (uuid -> replica id),
-- xlogs (the WAL files, oldest first), xlog_starts (the vclock each begins at)}.
function M.read(dir)
    if not fio.path.is_dir(dir) then
        fail('%s is not a directory', dir)
    end
    M.refuse_if_in_use(dir)
    local snaps, xlogs = data_files(dir, 'snap'), data_files(dir, 'xlog')
    if #snaps == 0 then
        fail('%s holds no snapshot: not a Tarantool data directory', dir)
    end
    local d = {dir = dir, xlogs = xlogs, vclock = {}, spaces = {}, members = {},
               xlog_starts = {}}
    local newest = M.file_meta(snaps[#snaps])
    d.instance = newest.instance
    for id, lsn in pairs(newest.vclock) do
        max_into(d.vclock, id, lsn)
    end
    -- An UPDATE row's `tuple` is its operations: only INSERT/REPLACE carry tuples.
    local function system_row(h, b)
        local t = (h.type == 'INSERT' or h.type == 'REPLACE') and b.tuple or nil
        if b.space_id == SPACE_SPACE and t ~= nil then
            d.spaces[t[3]] = t[1]
        elseif b.space_id == SPACE_CLUSTER then
            if t ~= nil then
                d.members[tostring(t[2])] = t[1]
            elseif h.type == 'DELETE' and b.key ~= nil then
                for u, id in pairs(d.members) do
                    if id == b.key[1] then
                        d.members[u] = nil
                    end
                end
            end
        end
    end
    -- The snapshot lists system spaces first: stop at the first user space.
    for _, row in xlog.pairs(snaps[#snaps]) do
        local b = row.BODY or {}
        if (b.space_id or 0) >= FIRST_USER_SPACE then
            break
        end
        system_row(row.HEADER or {}, b)
    end
    for _, path in ipairs(xlogs) do
        local meta = M.file_meta(path)
        table.insert(d.xlog_starts, meta.vclock)
        d.instance = meta.instance
        for id, lsn in pairs(meta.vclock) do
            max_into(d.vclock, id, lsn)
        end
    end
    each_wal_row(xlogs, function(h, b)
        max_into(d.vclock, h.replica_id, h.lsn)
        system_row(h, b)
    end)
    d.id = d.members[d.instance]
    if d.id == nil then
        fail('%s: instance %s is not in its own _cluster: cannot tell its replica id',
            dir, d.instance)
    end
    return d
end

-- A created_at field as microseconds since the Unix epoch: the unsigned of a
-- server without datetime, or a datetime's epoch seconds and nanoseconds.
function M.micros(v)
    if type(v) == 'number' or type(v) == 'cdata' and tonumber(v) ~= nil then
        return tonumber(v)
    end
    local ok, us = pcall(function() return v.epoch * 1000000 + math.floor(v.nsec / 1000) end)
    return ok and us or nil
end

local function str(v)
    return v ~= nil and tostring(v) or nil
end

-- Row types: data changes, and the synchronous queue's ROLLBACK (a WAL row
-- {replica_id, lsn}: every transaction of that instance from lsn on was undone).
-- The xlog module gives the ROLLBACK row's type as its number (2.6) or a name
-- (RAFT_ROLLBACK on 3.8), and its body under numeric keys.
local DML = {INSERT = true, REPLACE = true, UPDATE = true, DELETE = true, UPSERT = true}
local IPROTO_ROLLBACK = 41
local IPROTO_REPLICA_ID, IPROTO_LSN = 0x02, 0x03

local function rollback_of(h, b)
    if h.type ~= IPROTO_ROLLBACK
            and not (type(h.type) == 'string' and h.type:match('ROLLBACK$')) then
        return nil
    end
    return b.replica_id or b[IPROTO_REPLICA_ID], b.lsn or b[IPROTO_LSN]
end

-- The messages instance `d` (from M.read) wrote after its lsn `from` (the new
-- master's component) and did not roll back, in write order, each
-- {id, dialog_id, user_from, user_to, text, created_at (microseconds), lsn,
-- request_id (the one it was stored under, or nil)}; the other changes in that
-- range, counted by 'space TYPE'; the number of rolled-back messages. Fails when
-- the WAL files that held those rows are gone (only a snapshot has them).
function M.diverged_messages(d, from)
    local first = d.xlog_starts[1]
    if first == nil or (first[d.id] or 0) > from then
        fail('the WAL rows of instance %d after lsn %d are not in %s any more (only in a '
            .. 'snapshot): cannot tell which messages diverged', d.id, from, d.dir)
    end
    local messages_id, requests_id = d.spaces[M.MESSAGES], d.spaces[M.REQUESTS]
    if messages_id == nil then
        fail('%s has no space %q', d.dir, M.MESSAGES)
    end
    local space_name = {}
    for name, id in pairs(d.spaces) do
        space_name[id] = name
    end
    -- message id -> message (with the lsn it was written at, and its
    -- transaction's tsn); message id -> {request, lsn, tsn}
    local by_id, order, request_of, others, rolled_back = {}, {}, {}, {}, 0
    -- tsn -> the lsn of the transaction's last row: the synchronous queue confirms
    -- and rolls back whole transactions by that lsn, and a message's row need not
    -- be its transaction's last (the inbox rows follow it).
    local tx_end = {}
    local function end_of(row)
        return row.tsn ~= nil and tx_end[row.tsn] or row.lsn
    end
    each_wal_row(d.xlogs, function(h, b)
        if h.replica_id ~= d.id or (h.lsn or 0) <= from then
            return
        end
        if h.tsn ~= nil and h.lsn > (tx_end[h.tsn] or 0) then
            tx_end[h.tsn] = h.lsn
        end
        local rb_instance, rb_lsn = rollback_of(h, b)
        if rb_instance == d.id and rb_lsn ~= nil then
            for id, m in pairs(by_id) do
                if end_of(m) >= rb_lsn then
                    by_id[id] = nil
                    rolled_back = rolled_back + 1
                end
            end
            for id, r in pairs(request_of) do
                if end_of(r) >= rb_lsn then
                    request_of[id] = nil
                end
            end
            return
        end
        if not DML[h.type] then
            return -- CONFIRM, PROMOTE, NOP...: no data of their own
        end
        local t = b.tuple
        if b.space_id == messages_id and (h.type == 'INSERT' or h.type == 'REPLACE') then
            local id = str(t[1])
            table.insert(order, id)
            by_id[id] = {id = id, dialog_id = str(t[2]), user_from = str(t[3]),
                         user_to = str(t[4]), text = t[5], created_at = M.micros(t[6]),
                         lsn = h.lsn, tsn = h.tsn}
        elseif b.space_id == messages_id and h.type == 'DELETE' then
            by_id[str(b.key[1])] = nil
        elseif b.space_id == requests_id and (h.type == 'INSERT' or h.type == 'REPLACE') then
            request_of[str(t[2])] = {request_id = str(t[1]), lsn = h.lsn, tsn = h.tsn}
        else
            local name = (space_name[b.space_id] or tostring(b.space_id)) .. ' ' .. h.type
            others[name] = (others[name] or 0) + 1
        end
    end)
    local out, seen = {}, {}
    for _, id in ipairs(order) do
        local m = by_id[id]
        if m ~= nil and not seen[id] then
            seen[id] = true
            m.request_id = request_of[id] and request_of[id].request_id
            table.insert(out, m)
        end
    end
    return out, others, rolled_back
end

return M

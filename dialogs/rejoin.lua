-- dialogs.rejoin: bringing an old master back as a replica after an asynchronous
-- failover without losing, or replicating into the new master, the writes that
-- only it holds (scripts/rejoin is the command over it; docs/operations.md,
-- "Rejoining an old master").
--
--   check  DATA_DIR MASTER           0 when it may rejoin as it is, 3 when not
--   export DATA_DIR MASTER --to FILE [--wipe]
--   replay FILE --master-socket PATH
--
-- The old instance (its data directory read offline: dialogs/old_data.lua) has
-- diverged when its vclock component under its own id is greater than the new
-- master's: it acknowledged writes that never left it. Started as a replica it
-- would send those rows to the whole replica set, where a request_id the client
-- has retried on the new master collides and stops replication. Export writes
-- those messages as JSON Lines; replay sends each through new_dialog on the new
-- master (its admin console: dialogs/console_client.lua) with its request_id, so
-- a message the client already retried there, or a second replay, stores nothing.
--
-- Errors: a bad command line raises a usage error (M.is_usage_error); any other
-- failure raises a string. The commands print to stdout and return an exit status.

local errno = require('errno')
local fio = require('fio')
local json = require('json')
local uuid = require('uuid')
local yaml = require('yaml')

local console_client = require('dialogs.console_client')
local ids = require('dialogs.ids')
local old_data = require('dialogs.old_data')

local M = {}

M.EXIT_OK = 0
M.EXIT_FAILED = 1
M.EXIT_USAGE = 2
M.EXIT_DIVERGED = 3

-- The namespace of the request ids replay derives for messages stored without one:
-- UUIDv5(REPLAY_NAMESPACE, the old message id's 16 bytes). docs/operations.md,
-- "Rejoining an old master".
M.REPLAY_NAMESPACE = '29b59a37-3f33-4d98-98ae-08142f98d752'

M.USAGE = [[
usage: scripts/rejoin check  DATA_DIR MASTER
       scripts/rejoin export DATA_DIR MASTER --to FILE [--wipe]
       scripts/rejoin replay FILE --master-socket PATH
MASTER: --master-socket PATH (the new master's admin socket)
     or --master-vclock VCLOCK (its box.info.vclock, e.g. '{1: 12, 2: 40}' or '[12, 40]')
]]

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

------------------------------------------------------------------------------
-- Command line
------------------------------------------------------------------------------

local UsageError = {__tostring = function(e) return e.message or '' end}

-- A bad command line: `message` says what is wrong (nil: help was asked for).
local function usage(message)
    error(setmetatable({message = message}, UsageError), 0)
end

function M.is_usage_error(e)
    return getmetatable(e) == UsageError
end

-- A vclock as a map {replica id (number) -> lsn (number)}, from what an operator
-- pastes: a YAML/JSON map ({1: 12, 2: 40}, {"1": 12}) or a JSON array ([12, 40],
-- what json.encode makes of a vclock without gaps).
function M.parse_vclock(text)
    local ok, t = pcall(yaml.decode, text)
    if not ok or type(t) ~= 'table' then
        usage(string.format('--master-vclock: expected a map {id: lsn, ...}, got %q', text))
    end
    local v = {}
    for k, lsn in pairs(t) do
        local id = tonumber(k)
        if id == nil or id ~= math.floor(id) or id < 0 or type(lsn) ~= 'number'
                or lsn < 0 or lsn ~= math.floor(lsn) then
            usage(string.format('--master-vclock: bad component %s: %s in %q',
                tostring(k), tostring(lsn), text))
        end
        v[id] = lsn
    end
    return v
end

-- The options of a command line (the script's `arg`): {command, path, socket,
-- vclock, vclock_text, to, wipe}, paths made absolute.
function M.parse_args(args)
    local o = {command = args[1]}
    if o.command ~= 'check' and o.command ~= 'export' and o.command ~= 'replay' then
        usage(o.command and ('unknown command ' .. o.command) or nil)
    end
    local i = 2
    local function value(name)
        i = i + 1
        if args[i] == nil then
            usage(name .. ' needs a value')
        end
        return args[i]
    end
    while i <= #args do
        local a = args[i]
        if a == '--master-socket' then
            o.socket = fio.abspath(value(a))
        elseif a == '--master-vclock' then
            o.vclock_text = value(a)
        elseif a == '--to' then
            o.to = fio.abspath(value(a))
        elseif a == '--wipe' then
            o.wipe = true
        elseif a == '-h' or a == '--help' then
            usage()
        elseif a:sub(1, 1) == '-' then
            usage('unknown option ' .. a)
        elseif o.path == nil then
            o.path = fio.abspath(a)
        else
            usage('unexpected argument ' .. a)
        end
        i = i + 1
    end
    if o.path == nil then
        usage(o.command == 'replay' and 'which FILE?' or 'which DATA_DIR?')
    end
    if o.command == 'replay' then
        if o.socket == nil or o.vclock_text or o.to or o.wipe then
            usage('replay takes FILE and --master-socket only')
        end
    else
        if (o.socket == nil) == (o.vclock_text == nil) then
            usage('give one of --master-socket or --master-vclock')
        end
        if o.command == 'check' and (o.to or o.wipe) then
            usage('--to and --wipe belong to export')
        end
        if o.command == 'export' and o.to == nil then
            usage('export needs --to FILE')
        end
        o.vclock = o.vclock_text and M.parse_vclock(o.vclock_text)
    end
    return o
end

-- A vclock as '{1: 12, 2: 40}', replica ids in order.
function M.vclock_string(v)
    local replica_ids = {}
    for id in pairs(v) do
        table.insert(replica_ids, id)
    end
    table.sort(replica_ids)
    local parts = {}
    for _, id in ipairs(replica_ids) do
        table.insert(parts, string.format('%d: %d', id, v[id]))
    end
    return '{' .. table.concat(parts, ', ') .. '}'
end

------------------------------------------------------------------------------
-- The new master's view
------------------------------------------------------------------------------

-- What the master says about itself and about the old instance's uuid: its
-- vclock (string keys, so JSON keeps it a map), whether it is writable, and the
-- replica id it has registered for `old_uuid` (nil when it has none).
local MASTER_STATE = "a = a[1] local v = {} "
    .. "for id, lsn in pairs(box.info.vclock) do v[tostring(id)] = lsn end "
    .. "local old = box.space._cluster.index.uuid:get(a) "
    .. "return {vclock = v, ro = box.info.ro, id = box.info.id, uuid = box.info.uuid, "
    .. "old_id = old and old[1] or nil}"

local function master_state(c, old_uuid)
    local s = c:call(MASTER_STATE, old_uuid)
    local v = {}
    for id, lsn in pairs(s.vclock) do
        v[tonumber(id)] = lsn
    end
    s.vclock = v
    return s
end

-- Where the master's view comes from: the admin socket (which also checks that
-- the master knows the old instance under the same id) or a pasted vclock.
local function master_vclock(o, old)
    if o.vclock ~= nil then
        return o.vclock
    end
    local c = console_client.connect(o.socket)
    local s = master_state(c, old.instance)
    c:close()
    if s.old_id == nil then
        fail('the master (%s) has no instance %s in its _cluster: %s belongs to another '
            .. 'replica set, or its registration was deleted (--master-vclock compares '
            .. 'without that check)', s.uuid, old.instance, old.dir)
    end
    if s.old_id ~= old.id then
        fail('the master has instance %s as replica id %d, its own data says %d',
            old.instance, s.old_id, old.id)
    end
    return s.vclock
end

------------------------------------------------------------------------------
-- The verdict and the export
------------------------------------------------------------------------------

-- Compares the old instance's own vclock component (`old` from old_data.read)
-- with the master's. Returns 'same', 'diverged' (it has rows the master lacks) or
-- 'behind' (the master has more of its rows than it does: a stale directory),
-- then its own lsn and the master's.
function M.verdict(old, master)
    local mine, theirs = old.vclock[old.id] or 0, master[old.id] or 0
    if mine > theirs then
        return 'diverged', mine, theirs
    elseif mine < theirs then
        return 'behind', mine, theirs
    end
    return 'same', mine, theirs
end

local function report(old, mvclock, state, mine, theirs)
    print(string.format('old instance %s (replica id %d) in %s', old.instance, old.id, old.dir))
    print(string.format('  its vclock:        %s', M.vclock_string(old.vclock)))
    print(string.format('  master\'s vclock:   %s', M.vclock_string(mvclock)))
    if state == 'diverged' then
        print(string.format('  diverged: it holds its own rows %d..%d, which the master '
            .. 'never received', theirs + 1, mine))
    elseif state == 'behind' then
        print(string.format('  behind: the master has its rows up to %d, its data only up '
            .. 'to %d (a stale data directory)', theirs, mine))
    else
        print('  not diverged: the master has every row it wrote')
    end
end

-- One JSON object per message, fields in a fixed order.
M.EXPORT_FIELDS = {'id', 'dialog_id', 'user_from', 'user_to', 'text', 'created_at',
                   'request_id'}

-- A message's line of the export file (ending in a newline): its EXPORT_FIELDS in
-- order, a missing one as null.
function M.export_line(m)
    local parts = {}
    for _, k in ipairs(M.EXPORT_FIELDS) do
        local v = m[k]
        table.insert(parts, json.encode(k) .. ':' .. json.encode(v == nil and json.NULL or v))
    end
    return '{' .. table.concat(parts, ',') .. '}\n'
end

-- Writes `lines` to `path` through a temporary file, synced before it takes the
-- name, so an interrupted export never leaves a partial file under that name.
local function write_file(path, lines)
    if fio.path.lexists(path) then
        fail('%s exists: choose another name (an export is never overwritten)', path)
    end
    local tmp = path .. '.tmp'
    local f = fio.open(tmp, {'O_WRONLY', 'O_CREAT', 'O_TRUNC'}, tonumber('600', 8))
    if f == nil then
        fail('cannot create %s: %s', tmp, errno.strerror())
    end
    if not f:write(table.concat(lines)) or not f:fsync() then
        fail('writing %s: %s', tmp, errno.strerror())
    end
    f:close()
    if not fio.rename(tmp, path) then
        fail('renaming %s to %s: %s', tmp, path, errno.strerror())
    end
end

local function next_steps(o, old, aside)
    local moved = aside and string.format('%s has been moved to %s.', old.dir, aside)
        or string.format('Move the data directory aside (never delete it before the replay '
            .. 'is done):\n  mv %s %s.diverged', old.dir, old.dir)
    print(moved)
    print('Then start the instance with DIALOGS_READ_ONLY=true (DIALOGS_REPLICATION listing '
        .. 'the new master): it joins with an empty directory, under a new replica id.')
    print(string.format('Then replay the export on the new master:  scripts/rejoin replay '
        .. '%s --master-socket %s', o.to, o.socket or 'PATH'))
    print(string.format('Once it has rejoined, replica id %d is no longer used: '
        .. 'box.space._cluster:delete(%d) on the master removes it (and any WAL files the '
        .. 'master keeps for it).', old.id, old.id))
end

-- `check`: prints the verdict; EXIT_OK when the instance may rejoin as it is,
-- EXIT_DIVERGED (with the refusal on stderr) when it must be exported first.
function M.check(o)
    local old = old_data.read(o.path)
    local mvclock = master_vclock(o, old)
    local state, mine, theirs = M.verdict(old, mvclock)
    report(old, mvclock, state, mine, theirs)
    if state == 'same' then
        print('it may rejoin as it is: start it with DIALOGS_READ_ONLY=true')
        return M.EXIT_OK
    end
    io.stderr:write(string.format('rejoin: refused: %s must not rejoin with this data: '
        .. 'run `scripts/rejoin export %s ... --to FILE` first, then start it from an '
        .. 'empty data directory\n', old.dir, old.dir))
    return M.EXIT_DIVERGED
end

-- `export`: writes the diverged messages (none unless it diverged) to o.to, with
-- --wipe moves the data directory aside (renamed, never deleted), prints the
-- next steps.
function M.export(o)
    local old = old_data.read(o.path)
    local mvclock = master_vclock(o, old)
    local state, mine, theirs = M.verdict(old, mvclock)
    report(old, mvclock, state, mine, theirs)
    local messages, others, rolled_back = {}, {}, 0
    if state == 'diverged' then
        messages, others, rolled_back = old_data.diverged_messages(old, theirs)
    end
    local lines = {}
    for _, m in ipairs(messages) do
        table.insert(lines, M.export_line(m))
    end
    write_file(o.to, lines)
    print(string.format('exported %d message(s) to %s', #messages, o.to))
    if rolled_back > 0 then
        print(string.format('  left out %d message(s) it rolled back (synchronous writes '
            .. 'that timed out: never acknowledged)', rolled_back))
    end
    for name, n in pairs(others) do
        print(string.format('  also diverged, not exported: %d row(s) of %s', n, name))
    end
    local aside
    if o.wipe then
        aside = o.path .. '.diverged-' .. os.date('!%Y%m%dT%H%M%SZ')
        old_data.refuse_if_in_use(o.path)
        if fio.path.lexists(aside) then
            fail('%s exists already', aside)
        end
        if not fio.rename(o.path, aside) then
            fail('cannot move %s to %s: %s (move it by hand)', o.path, aside, errno.strerror())
        end
    end
    next_steps(o, old, aside)
    return M.EXIT_OK
end

------------------------------------------------------------------------------
-- Replay
------------------------------------------------------------------------------

-- The request id replay gives a message exported without one: UUIDv5 of the old
-- message id's 16 bytes in REPLAY_NAMESPACE, as a string.
function M.derived_request_id(message_id)
    return ids.v5(M.REPLAY_NAMESPACE, uuid.fromstr(message_id):bin('b')):str()
end

local function is_uuid(v)
    return type(v) == 'string' and uuid.fromstr(v) ~= nil
end

-- One line of an export file as the message replay sends, its request_id
-- derived when it had none; `where` ('FILE:LINE') prefixes the error of a bad line.
function M.parse_export_line(line, where)
    local ok, m = pcall(json.decode, line)
    if not ok or type(m) ~= 'table' then
        fail('%s: not a JSON object', where)
    end
    for _, k in ipairs({'id', 'dialog_id', 'user_from', 'user_to'}) do
        if not is_uuid(m[k]) then
            fail('%s: %s is not a uuid', where, k)
        end
    end
    if type(m.text) ~= 'string' then
        fail('%s: text is not a string', where)
    end
    if m.request_id == json.NULL or m.request_id == nil then
        m.request_id = M.derived_request_id(m.id)
    elseif not is_uuid(m.request_id) then
        fail('%s: request_id is not a uuid', where)
    end
    return m
end

-- Every message of an export file, in its order (blank lines skipped).
function M.read_export(path)
    local f = io.open(path, 'r')
    if f == nil then
        fail('cannot open %s', path)
    end
    local messages, n = {}, 0
    for line in f:lines() do
        n = n + 1
        if line:match('%S') then
            local ok, m = pcall(M.parse_export_line, line, path .. ':' .. n)
            if not ok then
                f:close()
                error(m, 0)
            end
            table.insert(messages, m)
        end
    end
    f:close()
    return messages
end

-- One message through new_dialog on the master, with its request_id. Returns
-- {id = the stored id, present = whether the request_id was there before} or
-- {code, error}.
local REPLAY_ONE = "a = a[1] local uuid = require('uuid') "
    .. "local present = box.space.dialogs_requests:get(uuid.fromstr(a.request_id)) ~= nil "
    .. "local ok, r = pcall(box.func.new_dialog.call, box.func.new_dialog, "
    .. "{a.dialog_id, a.user_from, a.user_to, a.text, {request_id = a.request_id}}) "
    .. "if not ok then return {code = type(r) == 'cdata' and r.code or nil, "
    .. "error = tostring(r)} end "
    .. "return {id = type(r) == 'table' and r[1] or r, present = present}"

-- `replay`: each message of the export o.path through new_dialog on the master at
-- o.socket; prints old id -> id for each. EXIT_FAILED when any failed.
function M.replay(o)
    local messages = M.read_export(o.path)
    local c = console_client.connect(o.socket)
    local s = c:call("return {ro = box.info.ro, uuid = box.info.uuid}")
    if s.ro then
        fail('%s is read-only: replay goes to the master', o.socket)
    end
    local stored, present, failed = 0, 0, 0
    for _, m in ipairs(messages) do
        local r = c:call(REPLAY_ONE, {dialog_id = m.dialog_id, user_from = m.user_from,
            user_to = m.user_to, text = m.text, request_id = m.request_id})
        if r.error ~= nil then
            failed = failed + 1
            print(string.format('failed  %s: %s', m.id, r.error))
        elseif r.present then
            present = present + 1
            print(string.format('present %s -> %s (request_id %s was stored before)',
                m.id, r.id, m.request_id))
        else
            stored = stored + 1
            print(string.format('stored  %s -> %s (request_id %s)', m.id, r.id, m.request_id))
        end
    end
    c:close()
    print(string.format('replay: %d stored, %d already present, %d failed, of %d in %s',
        stored, present, failed, #messages, o.path))
    return failed == 0 and M.EXIT_OK or M.EXIT_FAILED
end

-- Runs the command `o` (from parse_args) names; returns its exit status.
function M.run(o)
    return M[o.command](o)
end

return M

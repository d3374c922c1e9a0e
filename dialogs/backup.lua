-- dialogs.backup: a consistent copy of a running instance, taken through its
-- admin console, checked against its manifest, and copied into an empty data
-- directory to serve again (scripts/backup is the command over it;
-- docs/backup.md).
--
--   take    SOCKET DEST         box.backup.start() there, copy, checksum, manifest
--   check   BACKUP              every file of the manifest present, size and sha256
--   restore BACKUP DATA_DIR     check, then copy into an empty DATA_DIR
--   take-cluster DEST NAME=SOCKET...   one cut of a sharded store: the rebalancer
--                               stopped on every storage, each master backed up
--                               into DEST/NAME, the rebalancer started again
--   restore-cluster BACKUP DATA_DIR    each replica set into DATA_DIR/NAME-master
--                               (scripts/run-sharded's layout)
--
-- A backup is the newest snapshot that box.backup.start() pins and the WAL files
-- after it (kept by the same pin: the garbage collector removes no WAL newer than
-- a pinned checkpoint). The WAL file being written is copied as far as its last
-- whole transaction, so the copy recovers without force_recovery. Nothing is ever
-- written to the live directory; box.backup.stop() is called whatever happens
-- after the start. A backup whose instance could not be told to stop (it died, the
-- console went away) is marked incomplete: a pin held throughout is what makes the
-- copied files one consistent state.
--
-- Errors: a bad command line raises a usage error (M.is_usage_error); a refused
-- destination a refusal (M.is_refusal); any other failure raises a string.

local clock = require('clock')
local crypto = require('crypto')
local fiber = require('fiber')
local fio = require('fio')
local json = require('json')
local msgpack = require('msgpack')

local console_client = require('dialogs.console_client')

local M = {}

M.EXIT_OK = 0
M.EXIT_FAILED = 1
M.EXIT_USAGE = 2
M.EXIT_REFUSED = 3

M.MANIFEST = 'manifest.json'
M.CLUSTER_MANIFEST = 'cluster.json'
-- How long take-cluster waits for buckets in transit to land, seconds.
M.TRANSIT_TIMEOUT_S = 60
local TRANSIT_POLL_S = 0.1
M.FORMAT = 1
-- Test only (docs/backup.md): after this many files are copied, `take` says so
-- on stdout and waits for a line on stdin, so that a test can act mid-copy.
M.PAUSE_ENV = 'DIALOGS_TEST_BACKUP_PAUSE_AFTER_FILES'

M.USAGE = [[
usage: scripts/backup take    ADMIN_SOCKET DEST
       scripts/backup check   BACKUP
       scripts/backup restore BACKUP DATA_DIR
       scripts/backup take-cluster    DEST NAME=ADMIN_SOCKET...
       scripts/backup restore-cluster BACKUP DATA_DIR
ADMIN_SOCKET: the instance's admin console (DIALOGS_ADMIN_SOCKET on 2.x,
  <data dir>/tarantool.control on Tarantool 3). DEST and DATA_DIR: absent or empty.
take-cluster: one NAME=ADMIN_SOCKET per replica set, the socket of its master.
]]

-- How much of a file is read or written at once, bytes.
local CHUNK_BYTES = 1024 * 1024
-- An xlog's transactions: a fixed header (magic, then msgpack length, previous
-- crc, crc, padding) and `length` bytes of rows. The end-of-file marker closes a
-- finished file.
local TX_FIXHEADER_BYTES = 19
local TX_MAGIC = {['\xd5\xba\x0b\xab'] = true, ['\xd5\xba\x0b\xba'] = true}
local EOF_MARKER = '\xd5\x10\xad\xed'
local MAGIC_BYTES = 4

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

local UsageError = {__tostring = function(e) return e.message or '' end}
local Refusal = {__tostring = function(e) return e.message end}

local function usage(message)
    error(setmetatable({message = message}, UsageError), 0)
end

local function refuse(fmt, ...)
    error(setmetatable({message = string.format(fmt, ...)}, Refusal), 0)
end

function M.is_usage_error(e)
    return getmetatable(e) == UsageError
end

function M.is_refusal(e)
    return getmetatable(e) == Refusal
end

-- {command = ..., ...} from the script's arguments.
function M.parse_args(argv)
    local cmd = argv[1]
    local want = {take = {'socket', 'dest'}, check = {'backup'}, restore = {'backup', 'data_dir'},
        ['take-cluster'] = {'dest'}, ['restore-cluster'] = {'backup', 'data_dir'}}
    if cmd == nil or cmd == '-h' or cmd == '--help' then
        usage(nil)
    end
    local names = want[cmd]
    if names == nil then
        usage(string.format('unknown command %q', cmd))
    end
    local out = {command = cmd}
    for i, name in ipairs(names) do
        local v = argv[i + 1]
        if v == nil or v == '' then
            usage(string.format('%s: missing %s', cmd, name:upper()))
        end
        out[name] = v
    end
    if cmd == 'take-cluster' then
        out.members = {}
        local seen = {}
        for i = 3, #argv do
            local name, socket = argv[i]:match('^([%w_-]+)=(.+)$')
            if name == nil or seen[name] then
                usage(string.format('take-cluster: expected NAME=ADMIN_SOCKET (each NAME once), '
                    .. 'got %q', argv[i]))
            end
            seen[name] = true
            table.insert(out.members, {name = name, socket = socket})
        end
        if #out.members == 0 then
            usage('take-cluster: no NAME=ADMIN_SOCKET given')
        end
        return out
    end
    if argv[#names + 2] ~= nil then
        usage(string.format('%s: unexpected argument %q', cmd, argv[#names + 2]))
    end
    return out
end

------------------------------------------------------------------------------
-- Files
------------------------------------------------------------------------------

-- Raises the refusal unless `dir` is absent or an empty directory.
function M.check_empty_dir(dir, what)
    local st = fio.lstat(dir)
    if st == nil then
        return
    end
    if not st:is_dir() then
        refuse('%s %s exists and is not a directory; refusing to write there', what, dir)
    end
    local entries = fio.listdir(dir) or {}
    if #entries > 0 then
        refuse('%s %s is not empty (%d entries); refusing to write there', what, dir, #entries)
    end
end

local function open_or_fail(path, flags, mode)
    local f, err = fio.open(path, flags, mode)
    if f == nil then
        fail('cannot open %s: %s', path, tostring(err))
    end
    return f
end

-- The sha256 (hex) and size of the file at `path`.
function M.sha256_of(path)
    local f = open_or_fail(path, {'O_RDONLY'})
    local ctx = crypto.digest.sha256:new()
    local size = 0
    while true do
        local chunk = f:read(CHUNK_BYTES)
        if chunk == nil then
            f:close()
            fail('reading %s failed', path)
        end
        if chunk == '' then
            break
        end
        size = size + #chunk
        ctx:update(chunk)
    end
    f:close()
    return console_client.to_hex(ctx:result()), size
end

-- Where the file `name` (relative, from a manifest) goes under `dir`: a vinyl
-- file's subdirectory is made; `dir` itself must exist (a destination removed
-- midway is a failure, never quietly made again).
function M.target_path(dir, name)
    if name:find('..', 1, true) or name:sub(1, 1) == '/' then
        fail('%q: not a file name a backup holds', name)
    end
    local to = fio.pathjoin(dir, name)
    if fio.dirname(to) ~= fio.pathjoin(dir) and fio.path.is_dir(dir) then
        fio.mktree(fio.dirname(to))
    end
    return to
end

-- Copies `from` to the new file `to` (never an existing one); returns bytes copied.
function M.copy_file(from, to)
    local src = open_or_fail(from, {'O_RDONLY'})
    local dst, err = fio.open(to, {'O_WRONLY', 'O_CREAT', 'O_EXCL'}, tonumber('640', 8))
    if dst == nil then
        src:close()
        fail('cannot create %s: %s', to, tostring(err))
    end
    local size = 0
    local ok, e = pcall(function()
        while true do
            local chunk = src:read(CHUNK_BYTES)
            if chunk == nil then
                fail('reading %s failed', from)
            end
            if chunk == '' then
                return
            end
            if not dst:write(chunk) then
                fail('writing %s failed', to)
            end
            size = size + #chunk
        end
    end)
    src:close()
    dst:close()
    if not ok then
        error(e, 0)
    end
    return size
end

-- How many bytes of the xlog `data` hold its text header and whole transactions
-- (and the end marker, when the file is finished): a copy cut there recovers,
-- while one cut inside a transaction stops recovery. nil when `data` has no
-- complete header.
function M.whole_tx_length(data)
    local header_end = data:find('\n\n', 1, true)
    if header_end == nil then
        return nil
    end
    local pos = header_end + 2 -- 1-based: the first byte after the header
    while true do
        local magic = data:sub(pos, pos + MAGIC_BYTES - 1)
        if magic == EOF_MARKER then
            return pos + MAGIC_BYTES - 1
        end
        if not TX_MAGIC[magic] or #data < pos + TX_FIXHEADER_BYTES - 1 then
            return pos - 1
        end
        local ok, len = pcall(msgpack.decode, data, pos + MAGIC_BYTES)
        if not ok or type(len) ~= 'number' then
            return pos - 1
        end
        local tx_end = pos + TX_FIXHEADER_BYTES + len - 1
        if tx_end > #data then
            return pos - 1
        end
        pos = tx_end + 1
    end
end

-- Cuts the copied xlog at `path` after its last whole transaction.
local function trim_xlog(path)
    local f = open_or_fail(path, {'O_RDWR'})
    local data = f:read()
    local keep = data and M.whole_tx_length(data)
    if keep == nil then
        f:close()
        fail('%s: not an xlog (no complete header)', path)
    end
    if keep < #data and not f:truncate(keep) then
        f:close()
        fail('cannot truncate %s', path)
    end
    f:close()
end

-- The live files to copy, as {path = absolute, name = relative to the data
-- directory}: what box.backup.start() listed and every WAL file from the newest
-- one that begins at or before the pinned snapshot (2.x lists the snapshot alone;
-- the rows after it are in those files, kept by the same pin). Pure: `info` is
-- what START_BODY returns.
function M.files_to_copy(info)
    local function rel(path)
        for _, dir in ipairs({info.memtx_dir, info.wal_dir, info.vinyl_dir}) do
            if path:sub(1, #dir + 1) == dir .. '/' then
                return path:sub(#dir + 2)
            end
        end
        return fio.basename(path)
    end
    local snap_signature = -1
    local out, seen = {}, {}
    local function add(path)
        if not seen[path] then
            seen[path] = true
            table.insert(out, {path = path, name = rel(path)})
        end
    end
    for _, path in ipairs(info.files) do
        local sig = fio.basename(path):match('^(%d+)%.snap$')
        if sig ~= nil then
            snap_signature = math.max(snap_signature, tonumber(sig))
        end
        add(path)
    end
    local xlogs = {}
    for _, path in ipairs(info.xlogs) do
        local sig = fio.basename(path):match('^(%d+)%.xlog$')
        if sig ~= nil then
            table.insert(xlogs, {sig = tonumber(sig), path = path})
        end
    end
    table.sort(xlogs, function(a, b) return a.sig < b.sig end)
    local first = 1
    for i, x in ipairs(xlogs) do
        if x.sig <= snap_signature then
            first = i
        end
    end
    for i = first, #xlogs do
        add(xlogs[i].path)
    end
    return out
end

------------------------------------------------------------------------------
-- On the instance (through its console; one line each)
------------------------------------------------------------------------------

-- Pins the newest checkpoint and returns what the backup copies and records. A
-- failure after the pin releases it there and then.
M.START_BODY = table.concat({
    "local fio = require('fio')",
    "local function abs(p) if p:sub(1, 1) == '/' then return p end",
    "  return fio.abspath(fio.pathjoin(fio.cwd(), p)) end",
    "local files = box.backup.start()",
    "local ok, info = pcall(function()",
    "  local out = {files = {}, xlogs = {}, vclock = {}}",
    "  for _, f in ipairs(files) do table.insert(out.files, abs(f)) end",
    "  out.memtx_dir = abs(box.cfg.memtx_dir) out.wal_dir = abs(box.cfg.wal_dir)",
    "  out.vinyl_dir = abs(box.cfg.vinyl_dir)",
    "  for _, f in ipairs(fio.glob(fio.pathjoin(out.wal_dir, '*.xlog'))) do",
    "    table.insert(out.xlogs, abs(f)) end",
    "  for id, lsn in pairs(box.info.vclock) do out.vclock[tostring(id)] = lsn end",
    "  out.server_version = box.info.version out.instance_uuid = box.info.uuid",
    "  out.read_only = box.info.ro",
    "  local v = box.space._schema:get('dialogs_schema_version')",
    "  out.schema_version = v and v[2]",
    "  out.messages = box.space.dialogs and box.space.dialogs:len()",
    "  if box.space._bucket then out.buckets = {}",
    "    for _, t in box.space._bucket:pairs() do",
    "      if t[2] == 'active' then table.insert(out.buckets, t[1]) end end",
    "    out.bucket_count = #out.buckets end",
    "  return out end)",
    "if not ok then box.backup.stop() error(info) end",
    "return info",
}, ' ')

M.STOP_BODY = "box.backup.stop() return true"

-- A storage's rebalancer, off for a cluster cut and on again after it; and how
-- many of its buckets are in transit (a move the rebalancer had begun).
M.REBALANCER_OFF_BODY = "vshard.storage.rebalancer_disable() return true"
M.REBALANCER_ON_BODY = "vshard.storage.rebalancer_enable() return true"
M.IN_TRANSIT_BODY = "local n = 0 for _, t in box.space._bucket:pairs() do "
    .. "if t[2] == 'sending' or t[2] == 'receiving' then n = n + 1 end end return n"

------------------------------------------------------------------------------
-- Commands
------------------------------------------------------------------------------

local function now_iso()
    return os.date('!%Y-%m-%dT%H:%M:%SZ')
end

local function write_manifest(dest, manifest)
    local path = fio.pathjoin(dest, M.MANIFEST)
    local tmp = path .. '.tmp'
    local f = open_or_fail(tmp, {'O_WRONLY', 'O_CREAT', 'O_TRUNC'}, tonumber('640', 8))
    local ok = f:write(json.encode(manifest) .. '\n') and f:fsync()
    f:close()
    if not ok or not fio.rename(tmp, path) then
        fail('cannot write %s', path)
    end
end

local function copy_all(files, dest, opts, manifest)
    for i, file in ipairs(files) do
        local to = M.target_path(dest, file.name)
        M.copy_file(file.path, to)
        if file.name:match('%.xlog$') then
            trim_xlog(to)
        end
        local sum, size = M.sha256_of(to)
        table.insert(manifest.files, {name = file.name, size = size, sha256 = sum})
        opts.out(string.format('copied %s (%d bytes)\n', file.name, size))
        if opts.pause_after_files == i then
            opts.out(string.format('backup: paused after %d files (%s); '
                .. 'a line on stdin resumes\n', i, M.PAUSE_ENV))
            opts.wait()
        end
    end
end

-- take: the backup of the instance behind `socket` into `dest`. Returns the
-- manifest; raises when the backup is not complete (its manifest, when one was
-- written, then says complete = false and why).
function M.take(socket, dest, opts)
    M.check_empty_dir(dest, 'DEST')
    local client = console_client.connect(socket)
    local started_at = now_iso()
    local info = client:call(M.START_BODY)
    local manifest = {
        format = M.FORMAT, complete = false, started_at = started_at,
        server_version = info.server_version, instance_uuid = info.instance_uuid,
        read_only = info.read_only, schema_version = info.schema_version,
        vclock = info.vclock, messages = info.messages,
        bucket_count = info.bucket_count, buckets = info.buckets, files = {},
    }
    local ok, err = pcall(function()
        fio.mktree(dest)
        copy_all(M.files_to_copy(info), dest, opts, manifest)
    end)
    -- Released whatever the copy did; the pin held throughout only if this works.
    local stopped, stop_err = pcall(client.call, client, M.STOP_BODY)
    pcall(client.close, client)
    if ok and not stopped then
        ok, err = false, string.format('box.backup.stop() failed, so the instance may '
            .. 'not have kept the files pinned throughout: %s', tostring(stop_err))
    end
    manifest.finished_at = now_iso()
    manifest.complete = ok
    manifest.error = not ok and tostring(err) or nil
    if fio.path.is_dir(dest) then
        pcall(write_manifest, dest, manifest)
    end
    if not ok then
        fail('backup incomplete: %s%s', tostring(err), stopped and ''
            or ' (box.backup.stop() did not reach the instance; if it still runs, '
            .. 'call it on its console)')
    end
    return manifest
end

-- check: the manifest of `backup` when it is complete and every file matches it;
-- raises listing every problem otherwise.
function M.check(backup)
    local path = fio.pathjoin(backup, M.MANIFEST)
    local f = fio.open(path, {'O_RDONLY'})
    if f == nil then
        fail('%s: no manifest (%s): not a backup, or one that never finished', backup, path)
    end
    local text = f:read()
    f:close()
    local ok, manifest = pcall(json.decode, text or '')
    if not ok or type(manifest) ~= 'table' or type(manifest.files) ~= 'table' then
        fail('%s: not a backup manifest', path)
    end
    if manifest.complete ~= true then
        fail('%s: the backup is incomplete: %s', backup, tostring(manifest.error))
    end
    local problems = {}
    for _, file in ipairs(manifest.files) do
        local p = fio.pathjoin(backup, file.name)
        if not fio.path.exists(p) then
            table.insert(problems, file.name .. ': missing')
        else
            local sum, size = M.sha256_of(p)
            if size ~= file.size then
                table.insert(problems, string.format('%s: %d bytes, the manifest says %d',
                    file.name, size, file.size))
            elseif sum ~= file.sha256 then
                table.insert(problems, file.name .. ': sha256 differs from the manifest')
            end
        end
    end
    if #manifest.files == 0 then
        table.insert(problems, 'the manifest lists no files')
    end
    if #problems > 0 then
        fail('%s does not match its manifest:\n  %s', backup, table.concat(problems, '\n  '))
    end
    return manifest
end

-- restore: checks `backup`, copies its files into the empty `data_dir` and
-- checks the copies. Returns the manifest.
function M.restore(backup, data_dir)
    local manifest = M.check(backup)
    M.check_empty_dir(data_dir, 'DATA_DIR')
    fio.mktree(data_dir)
    for _, file in ipairs(manifest.files) do
        local to = M.target_path(data_dir, file.name)
        M.copy_file(fio.pathjoin(backup, file.name), to)
        local sum, size = M.sha256_of(to)
        if sum ~= file.sha256 or size ~= file.size then
            fail('%s: the copy differs from the backup', to)
        end
    end
    return manifest
end

-- The buckets of a cluster backup's replica sets (name -> list of ids): each
-- bucket must be in exactly one. Returns the total; raises naming the first
-- bucket found twice. Pure.
function M.check_buckets(by_replicaset)
    local owner, total = {}, 0
    local names = {}
    for name in pairs(by_replicaset) do
        table.insert(names, name)
    end
    table.sort(names)
    for _, name in ipairs(names) do
        for _, id in ipairs(by_replicaset[name]) do
            if owner[id] ~= nil then
                fail('bucket %s is in the backups of both %s and %s', tostring(id), owner[id],
                    name)
            end
            owner[id] = name
            total = total + 1
        end
    end
    return total
end

-- take-cluster: with the rebalancer off on every master of `members` (and on again
-- after, whatever happened), each master's backup into dest/NAME, and
-- dest/cluster.json listing the buckets per replica set. Returns that manifest.
function M.take_cluster(dest, members, opts)
    M.check_empty_dir(dest, 'DEST')
    local clients = {}
    for _, m in ipairs(members) do
        clients[m.name] = console_client.connect(m.socket)
    end
    local off = {}
    local manifest = {format = M.FORMAT, complete = false, started_at = now_iso(),
                      replicasets = {}}
    local ok, err = pcall(function()
        for _, m in ipairs(members) do
            clients[m.name]:call(M.REBALANCER_OFF_BODY)
            off[m.name] = true
        end
        opts.out('rebalancer stopped on every storage\n')
        local deadline = clock.monotonic() + M.TRANSIT_TIMEOUT_S
        for _, m in ipairs(members) do
            while clients[m.name]:call(M.IN_TRANSIT_BODY) > 0 do
                if clock.monotonic() > deadline then
                    fail('%s still has buckets in transit after %ds', m.name,
                        M.TRANSIT_TIMEOUT_S)
                end
                fiber.sleep(TRANSIT_POLL_S)
            end
        end
        fio.mktree(dest)
        local buckets = {}
        for _, m in ipairs(members) do
            opts.out(string.format('replica set %s:\n', m.name))
            local one = M.take(m.socket, fio.pathjoin(dest, m.name), opts)
            if one.buckets == nil then
                fail('%s (%s) is not a storage: it has no _bucket space', m.name, m.socket)
            end
            buckets[m.name] = one.buckets
            table.insert(manifest.replicasets, {name = m.name, backup = m.name,
                bucket_count = one.bucket_count, buckets = one.buckets})
        end
        manifest.bucket_count = M.check_buckets(buckets)
    end)
    local not_restarted = {}
    for _, m in ipairs(members) do
        if off[m.name] and not pcall(clients[m.name].call, clients[m.name],
                M.REBALANCER_ON_BODY) then
            table.insert(not_restarted, m.name)
        end
        pcall(clients[m.name].close, clients[m.name])
    end
    if ok and #not_restarted > 0 then
        ok, err = false, 'the rebalancer could not be started again on '
            .. table.concat(not_restarted, ', ')
    end
    manifest.finished_at = now_iso()
    manifest.complete = ok
    manifest.error = not ok and tostring(err) or nil
    if fio.path.is_dir(dest) then
        local f = fio.open(fio.pathjoin(dest, M.CLUSTER_MANIFEST),
            {'O_WRONLY', 'O_CREAT', 'O_TRUNC'}, tonumber('640', 8))
        if f ~= nil then
            f:write(json.encode(manifest) .. '\n')
            f:close()
        end
    end
    if not ok then
        fail('cluster backup incomplete: %s%s', tostring(err), #not_restarted == 0 and ''
            or ('; start the rebalancer by hand on ' .. table.concat(not_restarted, ', ')
                .. ': vshard.storage.rebalancer_enable()'))
    end
    return manifest
end

-- The cluster manifest of `backup` when it is complete, each replica set's backup
-- matches its own manifest with the buckets listed, and no bucket is in two.
function M.check_cluster(backup)
    local f = fio.open(fio.pathjoin(backup, M.CLUSTER_MANIFEST), {'O_RDONLY'})
    if f == nil then
        fail('%s: no %s: not a cluster backup', backup, M.CLUSTER_MANIFEST)
    end
    local ok, manifest = pcall(json.decode, f:read() or '')
    f:close()
    if not ok or type(manifest) ~= 'table' or type(manifest.replicasets) ~= 'table' then
        fail('%s: not a cluster backup manifest', backup)
    end
    if manifest.complete ~= true then
        fail('%s: the cluster backup is incomplete: %s', backup, tostring(manifest.error))
    end
    local buckets = {}
    for _, rs in ipairs(manifest.replicasets) do
        local one = M.check(fio.pathjoin(backup, rs.backup))
        buckets[rs.name] = one.buckets or {}
        if #buckets[rs.name] ~= rs.bucket_count then
            fail('%s: %s holds %d buckets, the cluster manifest says %s', backup, rs.name,
                #buckets[rs.name], tostring(rs.bucket_count))
        end
    end
    M.check_buckets(buckets)
    return manifest
end

-- restore-cluster: each replica set's backup into data_dir/NAME-master, where
-- scripts/run-sharded keeps its masters' data.
function M.restore_cluster(backup, data_dir)
    local manifest = M.check_cluster(backup)
    for _, rs in ipairs(manifest.replicasets) do
        M.check_empty_dir(fio.pathjoin(data_dir, rs.name .. '-master'), 'DATA_DIR')
    end
    for _, rs in ipairs(manifest.replicasets) do
        M.restore(fio.pathjoin(backup, rs.backup), fio.pathjoin(data_dir, rs.name .. '-master'))
    end
    return manifest
end

-- Runs a parsed command; `opts.out(text)` prints, `opts.wait()` blocks for the
-- test pause. Returns an exit status.
function M.run(args, opts)
    if args.command == 'take' then
        local m = M.take(args.socket, args.dest, opts)
        opts.out(string.format('backup complete: %s (%d files, %s messages, vclock %s)\n',
            args.dest, #m.files, tostring(m.messages), json.encode(m.vclock)))
    elseif args.command == 'take-cluster' then
        local m = M.take_cluster(args.dest, args.members, opts)
        opts.out(string.format('cluster backup complete: %s (%d replica sets, %d buckets)\n',
            args.dest, #m.replicasets, m.bucket_count))
    elseif args.command == 'restore-cluster' then
        local m = M.restore_cluster(args.backup, args.data_dir)
        opts.out(string.format('restored %s into %s (%d replica sets, %d buckets)\n',
            args.backup, args.data_dir, #m.replicasets, m.bucket_count))
    elseif args.command == 'check' and fio.path.exists(fio.pathjoin(args.backup,
            M.CLUSTER_MANIFEST)) then
        local m = M.check_cluster(args.backup)
        opts.out(string.format('cluster backup %s matches its manifests (%d replica sets, '
            .. '%d buckets, each once)\n', args.backup, #m.replicasets, m.bucket_count))
    elseif args.command == 'check' then
        local m = M.check(args.backup)
        opts.out(string.format('backup %s matches its manifest (%d files)\n', args.backup,
            #m.files))
    else
        local m = M.restore(args.backup, args.data_dir)
        opts.out(string.format('restored %s into %s (%d files); start a server on it\n',
            args.backup, args.data_dir, #m.files))
    end
    return M.EXIT_OK
end

return M

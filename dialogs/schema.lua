-- dialogs.schema: the store's spaces and procedures.
--
-- The schema is an ordered list of migrations. The applied version lives in
-- _schema under 'dialogs_schema_version'; `migrate` applies the missing ones, in
-- one transaction each, except a migration that walks the data (a table with
-- `batched = true`): that one commits in small batches and yields between them,
-- so the instance keeps serving, and is written to be repeated whole if a
-- restart interrupts it. Everything here changes the database: call it as admin,
-- on the writable instance only (replicas receive the result by replication).

local clock = require('clock')
local fiber = require('fiber')
local log = require('log')
local uuid = require('uuid')

local bucket = require('dialogs.bucket')
local capabilities = require('dialogs.capabilities')
local config = require('dialogs.config')

local M = {}

local SCHEMA_VERSION_KEY = 'dialogs_schema_version'

-- Rows per transaction of a batched migration.
M.BATCH = 1000

-- Gives every tuple of `space` that lacks field `fieldno` the value `value_of(t)`,
-- walking the primary key (its first part is `key_field`) M.BATCH tuples per
-- transaction. Rows written meanwhile already carry the field and are skipped.
local function fill_field(space, fieldno, key_field, value_of)
    local after = nil
    local filled = 0
    while true do
        local batch
        if after == nil then
            batch = space.index.pk:select({}, {limit = M.BATCH})
        else
            batch = space.index.pk:select({after}, {iterator = 'GT', limit = M.BATCH})
        end
        if #batch == 0 then
            return filled
        end
        box.begin()
        for _, t in ipairs(batch) do
            if t[fieldno] == nil then
                space:update({t[key_field]}, {{'!', fieldno, value_of(t)}})
                filled = filled + 1
            end
        end
        box.commit()
        after = batch[#batch][key_field]
        fiber.yield()
    end
end

-- The spaces of the inbox (schema v4) and the `bucket_id` index each has on a
-- vshard storage, by which vshard finds and moves a bucket's rows. Only there: on
-- a single store nothing reads it, and keeping it costs every new_dialog a
-- non-unique tree insert per row it writes (the entries' and the totals').
M.INBOX_SPACES = {'dialogs_inbox', 'dialogs_inbox_totals', 'dialogs_outbox'}

-- Gives the inbox's spaces their `bucket_id` index (those that lack it; the
-- spaces of a schema older than v4 are left alone). Called when the instance is
-- or becomes a vshard storage, before vshard moves any bucket: by v4 where
-- vshard's `_bucket` exists already, and by the storage's set-up
-- (dialogs.setup) on every start, which precedes vshard.storage.cfg. Idempotent;
-- as admin, on the writable instance. Returns how many it created.
function M.index_inbox_buckets()
    local created = 0
    for _, name in ipairs(M.INBOX_SPACES) do
        local space = box.space[name]
        if space ~= nil and space.index.bucket_id == nil then
            space:create_index('bucket_id', {type = 'TREE', unique = false,
                parts = {{field = 'bucket_id', type = 'unsigned'}}})
            created = created + 1
        end
    end
    if created > 0 then
        log.info('dialogs: bucket_id index created on %d inbox spaces (a vshard storage)',
            created)
    end
    return created
end

-- Adds `field` after the existing ones to the format of `space` (once).
local function add_to_format(space, field)
    local format = space:format()
    for _, f in ipairs(format) do
        if f.name == field.name then
            return
        end
    end
    table.insert(format, field)
    space:format(format)
end

-- The native entry that builds the inboxes (an internal procedure: defined by
-- register_internal_functions, granted to nobody).
M.INBOX_BUILD_FUNCTION = 'dialogs_inbox_build'

-- The inbox build (docs/inbox.md, "Existing data: the build"): where the walk
-- stands (the last message id walked, written by the native build in each
-- batch's transaction), and the flag it sets in the transaction of the last
-- batch, from which on the native code keeps the inboxes itself (a single
-- store) or the drainer delivers the outbox (a storage).
M.INBOX_BUILD_AFTER_KEY = 'dialogs_inbox_build_after'
M.INBOX_BUILT_KEY = 'dialogs_inbox_built'
-- A progress line at most this often, seconds.
local INBOX_BUILD_PROGRESS_EVERY_S = 10
M.INBOX_BUILD_PAUSED_LOG_LINE = 'dialogs: building the inboxes: paused'

-- True once the inboxes are built from every stored message.
function M.inbox_built()
    local t = box.space._schema:get{M.INBOX_BUILT_KEY}
    return t ~= nil and t[2] == true
end

-- Where a build stopped: the last message id it walked, or nil.
local function inbox_build_position()
    local t = box.space._schema:get{M.INBOX_BUILD_AFTER_KEY}
    local v = t and t[2]
    if type(v) == 'string' then
        return uuid.fromstr(v)
    end
    return v
end

-- Builds the inboxes from the stored messages: the native dialogs_inbox_build
-- walks the messages in id order, M.BATCH per call and transaction (on a single
-- store it delivers each message to both users' inboxes, on a vshard storage it
-- writes the message's outbox row, if absent), records its position, and
-- returns the last id it walked, or nil once it found no more (then it has set
-- the built flag in that same transaction). Between calls this fiber yields, so
-- the instance keeps serving; new messages get greater ids, so the walk reaches
-- those written meanwhile too. A restart resumes at the recorded position (a
-- delivery repeated is skipped by message id). Writable instance, as admin.
-- Test hooks (tests/python/test_inbox.py), unset in any real use:
-- DIALOGS_TEST_INBOX_BUILD_BATCH (messages per call) and
-- DIALOGS_TEST_INBOX_BUILD_PAUSE_AFTER (the build stops for good after that
-- many calls and logs INBOX_BUILD_PAUSED_LOG_LINE, for a kill -9 in the middle).
local function build_inboxes()
    if M.inbox_built() then
        return
    end
    M.register_internal_functions()
    local build = box.func[M.INBOX_BUILD_FUNCTION]
    local batch = config.test_setting('DIALOGS_TEST_INBOX_BUILD_BATCH', M.BATCH)
    local pause_after = config.test_setting('DIALOGS_TEST_INBOX_BUILD_PAUSE_AFTER', nil)
    local after = inbox_build_position()
    local where = box.space._bucket ~= nil and 'outbox rows' or 'inboxes'
    log.info('dialogs: building the inboxes (%s) from %d stored messages, %d per '
        .. 'transaction%s', where, box.space.dialogs:len(), batch,
        after and (', resuming after message ' .. after:str()) or '')
    local started = clock.monotonic()
    local last_progress = started
    local calls = 0
    while true do
        if pause_after ~= nil and calls >= pause_after then
            log.warn('%s after %d calls (DIALOGS_TEST_INBOX_BUILD_PAUSE_AFTER)',
                M.INBOX_BUILD_PAUSED_LOG_LINE, calls)
            while true do
                fiber.sleep(3600)
            end
        end
        after = build:call({after, batch})
        calls = calls + 1
        if after == nil then
            break
        end
        local now = clock.monotonic()
        if now - last_progress >= INBOX_BUILD_PROGRESS_EVERY_S then
            last_progress = now
            log.info('dialogs: building the inboxes: %d batches in %.0f s, at message %s '
                .. '(%d messages stored)', calls, now - started, after:str(),
                box.space.dialogs:len())
        end
        fiber.yield()
    end
    log.info('dialogs: the inboxes are built: %d batches of at most %d messages in %.1f s '
        .. '(%d messages stored)', calls, batch, clock.monotonic() - started,
        box.space.dialogs:len())
end

-- Builds the inboxes again from every stored message: for messages that reached
-- the space without new_dialog after a build (the report's, moved in by
-- dialogs.adopt once the migrations have run). Only before any client
-- procedure exists on this instance: a message written by new_dialog during the
-- walk would be delivered before the older ones the walk has not reached yet.
-- Entries already there are kept (a delivery is skipped by message id).
function M.rebuild_inboxes()
    box.space._schema:delete{M.INBOX_BUILT_KEY}
    box.space._schema:delete{M.INBOX_BUILD_AFTER_KEY}
    build_inboxes()
end

local migrations = {
    -- v1: the message space, its two indexes, and the retry log.
    function()
        local created_at = capabilities.supports_datetime() and 'datetime' or 'unsigned'
        local s = box.schema.space.create('dialogs', {
            engine = 'memtx',
            format = {
                {name = 'id', type = 'uuid'},
                {name = 'dialog_id', type = 'uuid'},
                {name = 'user_from_id', type = 'uuid'},
                {name = 'user_to_id', type = 'uuid'},
                {name = 'text', type = 'string'},
                {name = 'created_at', type = created_at},
            },
        })
        s:create_index('pk', {type = 'TREE', parts = {{field = 'id', type = 'uuid'}}})
        s:create_index('dialog_id_k', {
            type = 'TREE',
            unique = true,
            parts = {{field = 'dialog_id', type = 'uuid'}, {field = 'id', type = 'uuid'}},
        })
        -- new_dialog's opts.request_id -> the message it stored, so that a retried
        -- call returns the first call's id instead of storing the message twice.
        local r = box.schema.space.create('dialogs_requests', {
            engine = 'memtx',
            format = {
                {name = 'request_id', type = 'uuid'},
                {name = 'message_id', type = 'uuid'},
            },
        })
        r:create_index('pk', {type = 'TREE', parts = {{field = 'request_id', type = 'uuid'}}})
    end,
    -- v2: request ids by the age of their message (a UUIDv7 id starts with its
    -- time), for the expiry of dialogs.requests.
    function()
        box.space.dialogs_requests:create_index('message_id', {
            type = 'TREE',
            unique = false,
            parts = {{field = 'message_id', type = 'uuid'}},
        })
    end,
    -- v3: vshard's bucket_id (docs/sharding.md, "The bucket of a dialog") as the
    -- last field of both spaces, with the `bucket_id` index vshard moves data by:
    -- a message's bucket is its dialog's; a request's is its message's (a request
    -- whose message is gone takes its own id's, so that it is still sharded).
    -- Existing rows get theirs in batches; the format and the index follow.
    {batched = true, run = function()
        -- Set from the configuration before the migrations run (setup.lua);
        -- the default where nothing did.
        if bucket.stored_count() == nil then
            bucket.store_count(bucket.DEFAULT_COUNT, 'bucket_count')
        end
        local count = bucket.stored_count()
        local messages, requests = box.space.dialogs, box.space.dialogs_requests
        local filled = fill_field(messages, 7, 1, function(t)
            return bucket.of(t[2], count)
        end)
        filled = filled + fill_field(requests, 3, 1, function(t)
            local message = messages:get{t[2]}
            return bucket.of(message and message[2] or t[1], count)
        end)
        log.info('dialogs: bucket_id given to %d existing rows (%d buckets)', filled, count)
        for _, space in ipairs({messages, requests}) do
            add_to_format(space, {name = 'bucket_id', type = 'unsigned'})
            space:create_index('bucket_id', {
                type = 'TREE',
                unique = false,
                parts = {{field = 'bucket_id', type = 'unsigned'}},
                if_not_exists = true,
            })
        end
    end},
    -- v4: the inbox (docs/inbox.md, "The model"): a user's entry per dialog,
    -- the user's totals (the badge), and the outbox of deliveries a vshard
    -- storage still has to make. Every row lives in a bucket: an entry and a
    -- totals row in their user's, an outbox row in the bucket of the data it
    -- came from. Empty until the inbox is built (v5). The `bucket_id` indexes
    -- only on a vshard storage (M.index_inbox_buckets).
    function()
        local inbox = box.schema.space.create('dialogs_inbox', {
            engine = 'memtx',
            format = {
                {name = 'user_id', type = 'uuid'},
                {name = 'dialog_id', type = 'uuid'},
                {name = 'peer_id', type = 'uuid'},
                {name = 'last_id', type = 'uuid'},
                {name = 'last_from', type = 'uuid'},
                {name = 'last_text', type = 'string'},
                {name = 'unread', type = 'unsigned'},
                {name = 'read_id', type = 'uuid'},
                {name = 'peer_read_id', type = 'uuid'},
                {name = 'bucket_id', type = 'unsigned'},
            },
        })
        -- HASH: every use of it is a look-up of one entry (new_dialog's upkeep
        -- reads and replaces two per message), which a hash answers without the
        -- tree's descent over two-uuid keys. Walks of a user's entries, or of all
        -- of them in order, take `activity`, whose first part is the user.
        inbox:create_index('pk', {type = 'HASH', parts = {
            {field = 'user_id', type = 'uuid'}, {field = 'dialog_id', type = 'uuid'}}})
        -- list_dialogs walks it backwards: most recent activity first.
        inbox:create_index('activity', {type = 'TREE', unique = true, parts = {
            {field = 'user_id', type = 'uuid'}, {field = 'last_id', type = 'uuid'},
            {field = 'dialog_id', type = 'uuid'}}})
        local totals = box.schema.space.create('dialogs_inbox_totals', {
            engine = 'memtx',
            format = {
                {name = 'user_id', type = 'uuid'},
                {name = 'unread_messages', type = 'unsigned'},
                {name = 'unread_dialogs', type = 'unsigned'},
                {name = 'bucket_id', type = 'unsigned'},
            },
        })
        -- A TREE: the recount walks the rows in user order, a page at a time.
        totals:create_index('pk', {type = 'TREE', parts = {{field = 'user_id', type = 'uuid'}}})
        local outbox = box.schema.space.create('dialogs_outbox', {
            engine = 'memtx',
            format = {
                {name = 'id', type = 'uuid'},
                {name = 'bucket_id', type = 'unsigned'},
                {name = 'user_id', type = 'uuid', is_nullable = true},
                {name = 'dialog_id', type = 'uuid', is_nullable = true},
                {name = 'read_id', type = 'uuid', is_nullable = true},
            },
        })
        outbox:create_index('pk', {type = 'TREE', parts = {{field = 'id', type = 'uuid'}}})
        -- A storage upgraded from v3 (vshard made `_bucket` at an earlier start):
        -- vshard may already be moving buckets.
        if box.space._bucket ~= nil then
            M.index_inbox_buckets()
        end
    end,
    -- v5: the inboxes built from the stored messages (build_inboxes): in
    -- batches that yield, resumed after a restart; from its end on, new_dialog
    -- keeps them (a single store) or the outbox carries them (a storage).
    {batched = true, run = build_inboxes},
}

-- The version this release brings the data to.
M.VERSION = #migrations

-- The version the data is at (0: nothing applied yet).
function M.version()
    local t = box.space._schema:get{SCHEMA_VERSION_KEY}
    return t and t[2] or 0
end

-- Applies the missing migrations, each in one transaction, logged.
function M.migrate()
    local from = M.version()
    if from > #migrations then
        error(string.format('dialogs: the data is at schema version %d, newer than this '
            .. 'release knows (%d)', from, #migrations), 0)
    end
    for v = from + 1, #migrations do
        local m = migrations[v]
        if type(m) == 'table' and m.batched then
            m.run()
            box.space._schema:replace{SCHEMA_VERSION_KEY, v}
        else
            box.begin()
            m()
            box.space._schema:replace{SCHEMA_VERSION_KEY, v}
            box.commit()
        end
        log.info('dialogs: schema migrated to version %d', v)
    end
end

-- The version of Tarantool's own system spaces, as "major.minor.patch".
local function system_schema_version()
    local t = box.space._schema:get{'version'}
    if t == nil then
        return 'unknown'
    end
    return table.concat({t[2], t[3], t[4] or 0}, '.')
end

-- A data directory made by an older Tarantool keeps its old system spaces until
-- box.schema.upgrade() runs. 3.x refuses most writes to them until then (271
-- SCHEMA_NEEDS_UPGRADE), so this runs before anything else writes there. 2.11
-- takes those writes but warns at every start until the upgrade, and leaves the
-- directory on a schema it only tolerates: it is upgraded the same way, so that
-- every server that can tell runs on its own schema, by one procedure. The upgrade is
-- logged before and after; a failure stops the start-up with what to run by
-- hand. Writable instance only, as admin. Returns true if it upgraded.
function M.upgrade_system_spaces()
    if not capabilities.schema_needs_upgrade() then
        return false
    end
    local from = system_schema_version()
    log.info('dialogs: the data directory holds system spaces of Tarantool %s, older than '
        .. 'this server (%s): running box.schema.upgrade()', from, box.info.version)
    local ok, err = pcall(box.schema.upgrade)
    if not ok then
        error(string.format('dialogs: box.schema.upgrade() from %s failed: %s; fix the '
            .. 'cause and start again, or run box.schema.upgrade() as admin on this '
            .. 'instance', from, tostring(err)), 0)
    end
    log.info('dialogs: box.schema.upgrade() done: system spaces %s -> %s', from,
        system_schema_version())
    return true
end

-- The native procedures: C functions, run with their owner's rights (setuid) so
-- that a caller with only `execute` can reach the space. A function of that name
-- defined otherwise (by hand, or by an older release) is replaced; the grants of
-- execute on it must be given again afterwards (access.setup_app_user does).
local function register_c_functions(names)
    for _, name in ipairs(names) do
        local f = box.func[name]
        if f ~= nil and (f.language ~= 'C' or not f.setuid) then
            log.warn('dialogs: function %s was not a setuid C function: redefining it', name)
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {language = 'C', setuid = true, if_not_exists = true})
    end
    -- The counters' and slow calls' functions (dialogs.metrics), granted to nobody.
    require('dialogs.metrics').register_functions()
end

-- The internal native entries of every instance (config.INTERNAL_PROCEDURES:
-- dialogs_inbox_build), defined like the client procedures and granted to
-- nobody: admin and the schema's own code call them. A migration that needs one
-- calls this first (the client procedures are defined after the migrations).
function M.register_internal_functions()
    register_c_functions(config.INTERNAL_PROCEDURES)
end

function M.register_functions()
    register_c_functions(config.PROCEDURES)
    M.register_internal_functions()
end

return M

-- dialogs.schema: the store's spaces and procedures.
--
-- The schema is an ordered list of migrations. The applied version lives in
-- _schema under 'dialogs_schema_version'; `migrate` applies the missing ones, in
-- one transaction each, except a migration that walks the data (a table with
-- `batched = true`): that one commits in small batches and yields between them,
-- so the instance keeps serving, and is written to be repeated whole if a
-- restart interrupts it. Everything here changes the database: call it as admin,
-- on the writable instance only (replicas receive the result by replication).

local fiber = require('fiber')
local log = require('log')

local bucket = require('dialogs.bucket')
local capabilities = require('dialogs.capabilities')
local config = require('dialogs.config')

local M = {}

local SCHEMA_VERSION_KEY = 'dialogs_schema_version'

-- Rows given their bucket per transaction by a batched migration.
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
    -- came from. Empty until the inbox is built (v5).
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
        inbox:create_index('pk', {type = 'TREE', parts = {
            {field = 'user_id', type = 'uuid'}, {field = 'dialog_id', type = 'uuid'}}})
        -- list_dialogs walks it backwards: most recent activity first.
        inbox:create_index('activity', {type = 'TREE', unique = true, parts = {
            {field = 'user_id', type = 'uuid'}, {field = 'last_id', type = 'uuid'},
            {field = 'dialog_id', type = 'uuid'}}})
        inbox:create_index('bucket_id', {type = 'TREE', unique = false,
            parts = {{field = 'bucket_id', type = 'unsigned'}}})
        local totals = box.schema.space.create('dialogs_inbox_totals', {
            engine = 'memtx',
            format = {
                {name = 'user_id', type = 'uuid'},
                {name = 'unread_messages', type = 'unsigned'},
                {name = 'unread_dialogs', type = 'unsigned'},
                {name = 'bucket_id', type = 'unsigned'},
            },
        })
        totals:create_index('pk', {type = 'TREE', parts = {{field = 'user_id', type = 'uuid'}}})
        totals:create_index('bucket_id', {type = 'TREE', unique = false,
            parts = {{field = 'bucket_id', type = 'unsigned'}}})
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
        outbox:create_index('bucket_id', {type = 'TREE', unique = false,
            parts = {{field = 'bucket_id', type = 'unsigned'}}})
    end,
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

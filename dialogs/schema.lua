-- dialogs.schema: the store's spaces and procedures.
--
-- The schema is an ordered list of migrations. The applied version lives in
-- _schema under 'dialogs_schema_version'; `migrate` applies the missing ones, in
-- one transaction each. Everything here changes the database: call it as admin,
-- on the writable instance only (replicas receive the result by replication).

local log = require('log')

local capabilities = require('dialogs.capabilities')
local config = require('dialogs.config')

local M = {}

local SCHEMA_VERSION_KEY = 'dialogs_schema_version'

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
        box.begin()
        migrations[v]()
        box.space._schema:replace{SCHEMA_VERSION_KEY, v}
        box.commit()
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
-- box.schema.upgrade() runs, and until then a server that knows it (probed:
-- box.schema.needs_upgrade) refuses most writes to them (271
-- SCHEMA_NEEDS_UPGRADE), so this runs before anything else writes there. The
-- upgrade is logged before and after; a failure stops the start-up with what to
-- run by hand. Writable instance only, as admin. Returns true if it upgraded.
function M.upgrade_system_spaces()
    if not capabilities.can_tell_schema_needs_upgrade() or not box.schema.needs_upgrade() then
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
function M.register_functions()
    for _, name in ipairs(config.PROCEDURES) do
        local f = box.func[name]
        if f ~= nil and (f.language ~= 'C' or not f.setuid) then
            log.warn('dialogs: function %s was not a setuid C function: redefining it', name)
            box.schema.func.drop(name)
        end
        box.schema.func.create(name, {language = 'C', setuid = true, if_not_exists = true})
    end
end

return M

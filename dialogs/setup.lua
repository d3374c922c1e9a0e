-- dialogs.setup: what the writable instance does on every start (or every apply
-- of a role), in order, as admin. Idempotent: on a current schema it changes
-- nothing but the passwords it is given. A data directory of the report's own
-- store is adopted on the way (dialogs.adopt).

local fiber = require('fiber')

local access = require('dialogs.access')
local adopt = require('dialogs.adopt')
local bucket = require('dialogs.bucket')
local config = require('dialogs.config')
local replication = require('dialogs.replication')
local schema = require('dialogs.schema')

local M = {}

-- Settings (dialogs.config's shape):
--   user, password      the application user; without a password the user is not
--                       managed here (a role whose credentials declare it), and
--                       only granted execute on the procedures if it exists;
--   user_setting        how log lines name the user setting (e.g. DIALOGS_USER);
--   replication         the replication settings, or nil when replication is
--                       configured elsewhere (the synchronous mode and the
--                       replication user are then left alone);
--   bucket_count        the vshard bucket count the data is spread over, stored
--                       with the data at its first start and refused if it
--                       differs later (nil: whatever is stored, else the default);
--   bucket_count_setting  how that refusal names the setting;
--   takes_clients       false on a storage of a sharded store: routers call it,
--                       clients do not, so it has no application user (one left
--                       by an earlier configuration is dropped) and guest may
--                       call nothing;
--   guest               what guest may do (config.GUEST_ACCESS; nil: 'none'),
--   guest_setting       and how log lines name that setting.
function M.writable_instance(s)
    box.session.su('admin', function()
        -- Reads only: a directory that is neither this store's nor the report's
        -- is refused before anything is written to it.
        local report = adopt.inspect()
        -- Before any other write: an older server's system spaces refuse them.
        schema.upgrade_system_spaces()
        if report ~= nil then
            -- The report's grants and passwords go first, its space aside.
            adopt.prepare()
        end
        if s.bucket_count ~= nil then
            bucket.store_count(s.bucket_count, s.bucket_count_setting or 'bucket_count')
        end
        schema.migrate()
        if report ~= nil then
            -- Into the space the migrations made, before any procedure exists
            -- that could write there.
            adopt.move()
            -- The moved messages reach their users' inboxes (still no procedure
            -- exists that could write meanwhile).
            schema.rebuild_inboxes()
        end
        if s.replication ~= nil then
            replication.apply_sync_mode(s.replication)
        end
        schema.register_functions()
        if s.takes_clients == false then
            access.drop_app_user()
        elseif s.password ~= nil then
            access.setup_app_user(s, s.user_setting)
        elseif s.user ~= nil and box.schema.user.exists(s.user) then
            access.grant_procedures(s.user)
        end
        if s.takes_clients == false then
            access.revoke_guest('a storage takes calls from routers only')
        else
            access.set_guest_access(s.guest or config.GUEST_NONE, s.guest_setting or 'guest')
        end
        access.restrict_public_role()
        if s.replication ~= nil then
            access.setup_replication_user(s.replication)
        end
        if s.takes_clients == false then
            -- A storage: the read entry routers call (after the replication user).
            require('dialogs.storage').register_functions(
                s.replication ~= nil and s.replication.user or nil)
            -- And the indexes vshard moves the inbox's rows by, before it starts
            -- (a store that was not a storage before gets them now).
            schema.index_inbox_buckets()
        end
    end)
end

-- A function that runs writable_instance(s) once, when the instance is
-- writable, whoever calls it first (the start-up, or the fiber that takes the
-- synchronous queue later); a second caller waits until the first is done. An
-- error is raised to the caller that ran it.
function M.once(s)
    local state = 'todo'
    local done = fiber.cond()
    return function()
        if state == 'todo' and not box.info.ro then
            state = 'running'
            local ok, err = pcall(M.writable_instance, s)
            state = 'done'
            done:broadcast()
            if not ok then
                error(err, 0)
            end
        end
        while state == 'running' do
            done:wait()
        end
    end
end

return M

-- dialogs.access: who may do what. The application user may call the client
-- procedures (config.PROCEDURES) and nothing else; guest nothing, or by choice
-- the two message procedures (config.GUEST_PROCEDURES) and nothing else; the
-- built-in 'public' role loses what reaches past them; the replication user has
-- the 'replication' role only. Changes the database: call as admin, on the
-- writable instance only.

local log = require('log')

local config = require('dialogs.config')

local M = {}

-- Tarantool's built-in 'public' role, held by guest and every user, carries
-- grants that reach past the two procedures on some versions: executing the SQL
-- function LUA() (any Lua text, as the caller) and writing the system spaces
-- _truncate and _collation. Revoked wherever they exist.
local PUBLIC_GRANTS_REVOKED = {
    {'execute', 'function', 'LUA'},
    {'write', 'space', '_truncate'},
    {'write', 'space', '_collation'},
}

function M.restrict_public_role()
    for _, g in ipairs(PUBLIC_GRANTS_REVOKED) do
        local privilege, object_type, object_name = unpack(g)
        local exists = object_type == 'space' and box.space[object_name] ~= nil
            or object_type == 'function' and box.func[object_name] ~= nil
        if exists then
            box.schema.role.revoke('public', privilege, object_type, object_name,
                {if_exists = true})
        end
    end
end

-- The name of the application user is kept in _schema, so that renaming it
-- removes the old one instead of leaving it able to log in.
local APP_USER_KEY = 'dialogs_app_user'

-- Grants `user` execute on the procedures (and nothing else): `names`, by
-- default every client procedure (config.PROCEDURES).
function M.grant_procedures(user, names)
    for _, name in ipairs(names or config.PROCEDURES) do
        box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
    end
end

-- The application user {user, password}: created or given its password, the
-- previous one (another name) dropped, execute on the procedures granted.
-- `user_setting` names the setting in the log line of a rename.
function M.setup_app_user(s, user_setting)
    local previous = box.space._schema:get{APP_USER_KEY}
    previous = previous and previous[2]
    if previous ~= nil and previous ~= s.user and box.schema.user.exists(previous) then
        log.warn('dialogs: %s changed from %q to %q: dropping user %q',
            user_setting or 'the application user', previous, s.user, previous)
        box.schema.user.drop(previous)
    end
    box.space._schema:replace{APP_USER_KEY, s.user}
    if box.schema.user.exists(s.user) then
        box.schema.user.passwd(s.user, s.password)
    else
        box.schema.user.create(s.user, {password = s.password})
    end
    M.grant_procedures(s.user)
end

-- The procedures guest holds execute on (the grants themselves: a replica has
-- the writable instance's).
local function guest_procedures()
    local names = {}
    local info = box.schema.user.info('guest')
    for _, name in ipairs(config.PROCEDURES) do
        for _, p in ipairs(info) do
            local privileges, object_type, object_name = unpack(p)
            if object_type == 'function' and object_name == name
                    and (',' .. privileges .. ','):find(',execute,', 1, true) then
                table.insert(names, name)
                break
            end
        end
    end
    return names
end

-- Revokes guest's execute on the procedures, where it has it; `why` says in
-- the log line why guest may not call them.
function M.revoke_guest(why)
    local revoked = guest_procedures()
    for _, name in ipairs(revoked) do
        box.schema.user.revoke('guest', 'execute', 'function', name, {if_exists = true})
    end
    if #revoked > 0 then
        log.warn('dialogs: revoked guest\'s execute on %s (%s)',
            table.concat(revoked, ' and '), why)
    end
end

-- What guest may do (`guest`, one of config.GUEST_ACCESS, given by the setting
-- `setting` names): with 'execute', execute on the procedures, granted; with
-- 'none', the same grants revoked, so that turning the choice off takes them
-- back. Nothing else of guest's is touched: it keeps Tarantool's defaults (a
-- session, the 'public' role, which restrict_public_role trims).
function M.set_guest_access(guest, setting)
    if guest == config.GUEST_EXECUTE then
        M.grant_procedures('guest', config.GUEST_PROCEDURES)
        -- Never the inbox's calls, whatever an earlier configuration granted.
        local allowed = {}
        for _, name in ipairs(config.GUEST_PROCEDURES) do
            allowed[name] = true
        end
        for _, name in ipairs(guest_procedures()) do
            if not allowed[name] then
                box.schema.user.revoke('guest', 'execute', 'function', name, {if_exists = true})
                log.warn('dialogs: revoked guest\'s execute on %s (guest may call %s only)',
                    name, table.concat(config.GUEST_PROCEDURES, ' and '))
            end
        end
    else
        M.revoke_guest(string.format('%s is %s', setting, config.GUEST_NONE))
    end
end

-- Logs, on every start, what guest may do here when it may call anything: a
-- warning that names the procedures (and says that nothing else is open to it).
-- `guest` is this instance's setting (config.GUEST_ACCESS), `setting` its name.
-- The grants are the writable instance's; where a replica's setting differs
-- from them, the warning says so.
function M.log_guest_access(guest, setting)
    -- (Whoever applies a configuration: all of guest's grants are admin's to see.)
    local calls = box.session.su('admin', guest_procedures)
    local chosen = guest == config.GUEST_EXECUTE
    if #calls == 0 then
        if chosen then
            log.warn('dialogs: %s is %s, but the writable instance has not granted it (yet): '
                .. 'guest may call nothing here; set it the same on every instance', setting,
                config.GUEST_EXECUTE)
        end
        return
    end
    local what = string.format('guest (anyone who can connect, no password) may call %s, '
        .. 'and nothing else: no read, no write, no eval', table.concat(calls, ' and '))
    if chosen then
        log.warn('dialogs: %s is %s: %s', setting, config.GUEST_EXECUTE, what)
    else
        log.warn('dialogs: %s is %s here, but the writable instance granted it: %s; set it '
            .. 'the same on every instance', setting, config.GUEST_NONE, what)
    end
end

-- A storage of a sharded store takes calls from routers only (a call that
-- bypassed them could write to a bucket that is not there): the application
-- user of an earlier configuration, if any, is dropped.
function M.drop_app_user()
    local t = box.space._schema:get{APP_USER_KEY}
    if t == nil then
        return
    end
    if box.schema.user.exists(t[2]) then
        log.warn('dialogs: this instance is a storage of a sharded store: dropping the '
            .. 'application user %q (clients call the routers)', t[2])
        box.schema.user.drop(t[2])
    end
    box.space._schema:delete{APP_USER_KEY}
end

-- The user peers log in as ({user, password} of the replication settings): the
-- 'replication' role and nothing else. Nothing without a password.
function M.setup_replication_user(r)
    if r.password == nil then
        return
    end
    if box.schema.user.exists(r.user) then
        box.schema.user.passwd(r.user, r.password)
    else
        box.schema.user.create(r.user, {password = r.password})
    end
    box.schema.user.grant(r.user, 'replication', nil, nil, {if_not_exists = true})
end

return M

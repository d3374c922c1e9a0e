-- The report's two Lua procedures, corrected, as the benchmark's baseline.
--
-- The report (shared/seed) stored dialogs with Lua functions created from a
-- `body` string. Its bugs are fixed here and nothing else is improved, so the
-- comparison with the native procedures stays honest:
--   * the format lists all 6 fields the insert writes (it listed 5);
--   * the `dialog_id_k` (dialog_id, id) index that get_dialog reads exists
--     (it was never created), and the primary key is the message id;
--   * uuid arguments are parsed with uuid.fromstr (it inserted dialog_id as given);
--   * created_at is a datetime where the server has one (2.10+), else unsigned
--     microseconds, exactly like the product's space;
--   * get_dialog takes the product's `limit` and `reverse` options, so that the
--     `page` workload asks both implementations for the same 50 messages (the
--     report's version could only return a whole dialog).
-- Like the product it keeps no user_from_k / user_to_k index: no procedure reads
-- them, and the two stores must carry the same indexes to compare fairly.
-- It lives in its own space, `lua_dialogs`, under the names lua_new_dialog and
-- lua_get_dialog. No grants here: bench.lua grants execute to the bench user.

local M = {}

M.SPACE = 'lua_dialogs'
M.FUNCTIONS = {'lua_new_dialog', 'lua_get_dialog'}

local NEW_DIALOG = [[function(dialog_id, user_from, user_to, text)
    local uuid = require('uuid')
    local new_uuid = uuid.new()
    box.space.lua_dialogs:insert{new_uuid, uuid.fromstr(dialog_id), uuid.fromstr(user_from),
        uuid.fromstr(user_to), text, %s}
    return new_uuid:str()
end]]

local GET_DIALOG = [[function(dialog_id, opts)
    local uuid = require('uuid')
    local limit, iterator = 1000, 'EQ'
    if opts ~= nil then
        limit = opts.limit or limit
        if opts.reverse then
            iterator = 'REQ'
        end
    end
    return box.space.lua_dialogs.index.dialog_id_k:select({uuid.fromstr(dialog_id)},
        {limit = limit, iterator = iterator})
end]]

-- Creates the space, its indexes and the two functions; safe to repeat. The
-- space takes the product's format (init.lua has run before), so both stores
-- hold the same message fields of the same types.
function M.setup()
    -- The product's six message fields; its seventh, bucket_id, is for vshard,
    -- and the report's store was not sharded.
    local format = {unpack(box.space.dialogs:format(), 1, 6)}
    local datetime = format[6].type == 'datetime'
    local s = box.schema.space.create(M.SPACE, {if_not_exists = true, format = format})
    s:create_index('pk', {if_not_exists = true, parts = {{field = 'id', type = 'uuid'}}})
    s:create_index('dialog_id_k', {
        if_not_exists = true,
        unique = true,
        parts = {{field = 'dialog_id', type = 'uuid'}, {field = 'id', type = 'uuid'}},
    })
    local now = datetime and "require('datetime').now()" or "require('fiber').time64()"
    box.schema.func.create('lua_new_dialog', {
        body = string.format(NEW_DIALOG, now), setuid = true, if_not_exists = true,
    })
    box.schema.func.create('lua_get_dialog', {
        body = GET_DIALOG, setuid = true, if_not_exists = true,
    })
end

return M

-- dialogs.capabilities: what the running server can do, probed (a module, a
-- function or a field exists), never read from its version string.

local M = {}

-- The `datetime` field type and module arrived together (2.10).
function M.supports_datetime()
    return (pcall(require, 'datetime'))
end

-- `space_object:alter` arrived in 2.7; before it, is_sync lives in _space.flags.
function M.supports_space_alter()
    return box.space._space.alter ~= nil
end

return M

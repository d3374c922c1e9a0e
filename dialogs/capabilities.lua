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

-- On 2.10+ a write to a synchronous space fails (227) until an instance owns
-- the synchronous queue, which box.ctl.promote() takes; box.info.synchro then
-- names the owner. 2.6 has neither.
function M.synchro_queue_needs_owner()
    if box.ctl.promote == nil then
        return false
    end
    local ok, owner = pcall(function() return box.info.synchro.queue.owner end)
    return ok and owner ~= nil
end

-- Whether the data's system spaces are older than the server (a data directory
-- made by an older Tarantool), or nil where the server cannot tell. The check is
-- public as box.schema.needs_upgrade from 3.6; earlier servers that have it
-- (2.11 among them; 2.6 has none) keep it as box.internal.schema_needs_upgrade,
-- where Tarantool's own metrics module looks for it too.
function M.schema_needs_upgrade()
    local probe = box.schema.needs_upgrade
    if probe == nil and box.internal ~= nil then
        probe = box.internal.schema_needs_upgrade
    end
    if probe == nil then
        return nil
    end
    return probe() == true
end

-- Whether the results of a C procedure travel over IPROTO one value each (the
-- compat option c_func_iproto_multireturn, 3.0+, set to 'new'); before it
-- existed, and with 'old', they arrive wrapped in one array.
function M.c_results_one_each()
    local ok, compat = pcall(require, 'compat')
    if not ok then
        return false
    end
    local found, option = pcall(function() return compat.c_func_iproto_multireturn end)
    return found and option ~= nil and option:is_new()
end

-- Fiber slices (2.11+): a fiber that runs longer than its slice without a
-- yield is stopped at the next check ("fiber slice is exceeded", 1 s by
-- default); fiber.set_slice gives the current fiber a longer one until it
-- yields. Before them, nothing stops a fiber that does not yield.
function M.supports_fiber_slice()
    return require('fiber').set_slice ~= nil
end

return M

-- dialogs.background: the store's background fibers, one of each name per
-- instance. The registry lives outside the module (in a global table), so that
-- reloading the module, re-running init.lua's set-up or reapplying a role
-- replaces a fiber instead of starting a second one.

local fiber = require('fiber')

local M = {}

local REGISTRY = '__dialogs_background_fibers'

local function registry()
    local r = rawget(_G, REGISTRY)
    if r == nil then
        r = {}
        rawset(_G, REGISTRY, r)
    end
    return r
end

-- The live fiber of that name, or nil.
function M.get(name)
    local f = registry()[name]
    if f ~= nil and f:status() ~= 'dead' then
        return f
    end
    return nil
end

-- Stops the fiber of that name, if one runs.
function M.stop(name)
    local f = M.get(name)
    registry()[name] = nil
    if f ~= nil and f ~= fiber.self() then
        f:cancel()
    end
end

-- Runs fn(...) in a fiber named 'dialogs.<name>', replacing one of the same name.
function M.start(name, fn, ...)
    M.stop(name)
    local f = fiber.new(fn, ...)
    f:name('dialogs.' .. name)
    registry()[name] = f
    return f
end

return M

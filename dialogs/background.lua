-- dialogs.background: the store's background fibers, one of each name per
-- instance. The registry lives outside the module (in a global table), so that
-- reloading the module, re-running init.lua's set-up or reapplying a role
-- replaces a fiber instead of starting a second one.

local fiber = require('fiber')
local log = require('log')

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


-- How long one wait for a change of the read-only state lasts before the
-- watcher checks whether it was stopped, and how long it waits after a failed
-- set-up before it tries again, seconds.
local WAIT_STEP_S = 1
local SETUP_RETRY_S = 5

-- A fiber body: whenever the instance is (or becomes) writable, runs
-- set_up(settings) once for that writable period; a failed set-up is logged
-- (naming `what`) and retried. `done` says the current writable period is
-- already handled. Runs until its fiber is cancelled (M.stop).
function M.whenever_writable(what, set_up, settings, done)
    while true do
        fiber.testcancel()
        if done then
            -- Wait until the instance is read-only again (or the fiber is stopped).
            pcall(box.ctl.wait_ro, WAIT_STEP_S)
            fiber.testcancel()
            done = not box.info.ro
        else
            pcall(box.ctl.wait_rw, WAIT_STEP_S)
            fiber.testcancel()
            if not box.info.ro then
                local ok, err = pcall(set_up, settings)
                if ok then
                    done = true
                else
                    log.error('dialogs: setting up %s failed: %s; retrying in %d s',
                        what, tostring(err), SETUP_RETRY_S)
                    fiber.sleep(SETUP_RETRY_S)
                end
            end
        end
    end
end

return M

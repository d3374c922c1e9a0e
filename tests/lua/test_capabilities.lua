-- dialogs.capabilities: which check tells that the data's system spaces are older
-- than the server. The public one (3.6+) is preferred; earlier servers that have
-- the check (2.11 among them) answer through the internal one; a server with
-- neither (2.6) cannot tell.

local check = require('check')
local capabilities = require('dialogs.capabilities')

-- Runs fn with a stand-in for the global `box` (no server runs here) whose
-- box.schema.needs_upgrade and box.internal.schema_needs_upgrade are `public` and
-- `internal` (nil: absent), then puts the real one back.
local function with_checks(public, internal, fn)
    local real = box
    box = {schema = {needs_upgrade = public}, internal = {schema_needs_upgrade = internal}}
    local ok, err = pcall(fn)
    box = real
    if not ok then
        error(err, 0)
    end
end

local function answers(value)
    return function() return value end
end

local function never()
    error('this check must not be asked')
end

return {
    {'the public check answers where the server has it', function()
        with_checks(answers(true), never, function()
            check.equal(capabilities.schema_needs_upgrade(), true, 'old data')
        end)
        with_checks(answers(false), never, function()
            check.equal(capabilities.schema_needs_upgrade(), false, 'current data')
        end)
    end},

    {'without it (2.11) the internal check answers', function()
        -- The internal check also returns the old version as a second value.
        with_checks(nil, function() return true, '2.3.1' end, function()
            check.equal(capabilities.schema_needs_upgrade(), true, 'old data')
        end)
        with_checks(nil, answers(false), function()
            check.equal(capabilities.schema_needs_upgrade(), false, 'current data')
        end)
    end},

    {'a server with neither cannot tell', function()
        with_checks(nil, nil, function()
            check.equal(capabilities.schema_needs_upgrade(), nil, 'no check')
        end)
    end},
}

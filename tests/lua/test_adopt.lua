-- dialogs.adopt's ids and dialogs.ids.dialog_of_string, without a server: the ids
-- an adoption issues are v7, strictly increasing, stamped with the message's
-- millisecond, above a floor; a report's dialog_id string names the dialog the
-- native procedures would read it as (tests/python/test_adopt.py adopts a whole
-- data directory).

local uuid = require('uuid')

local adopt = require('dialogs.adopt')
local check = require('check')
local ids = require('dialogs.ids')

local function millis(u)
    local b, ms = u:bin('b'), 0
    for i = 1, 6 do
        ms = ms * 256 + b:byte(i)
    end
    return ms
end

local function is_v7(u)
    local b = u:bin('b')
    return bit.rshift(b:byte(7), 4) == 7 and bit.rshift(b:byte(9), 6) == 2
end

-- 16 bytes: `ms` and a counter whose bits are all `fill` (0x00 or 0xff).
local function id_of(ms, fill)
    local b = {}
    for i = 6, 1, -1 do
        b[i] = ms % 256
        ms = math.floor(ms / 256)
    end
    for i = 7, 16 do
        b[i] = fill
    end
    b[7] = bit.bor(0x70, bit.band(fill, 0x0f))
    b[9] = bit.bor(0x80, bit.band(fill, 0x3f))
    return uuid.frombin(string.char(unpack(b)), 'b')
end

return {
    {'ids increase strictly and carry the millisecond when it is ahead', function()
        local issuer = adopt.issuer(nil)
        local stamps = {1000, 1000, 1000, 1001, 999, 5000, 5000, 4000, 1700000000123}
        local prev
        for i, ms in ipairs(stamps) do
            local id = issuer.issue(ms)
            check.equal(is_v7(id), true, 'v7 ' .. i)
            if prev ~= nil then
                check.equal(id:bin('b') > prev:bin('b'), true, 'increasing ' .. i)
                -- A stamp behind the previous id keeps that id's millisecond.
                check.equal(millis(id), math.max(ms, millis(prev)), 'millisecond ' .. i)
            else
                check.equal(millis(id), ms, 'first millisecond')
            end
            prev = id
        end
    end},
    {'ids start above the floor', function()
        local floor = id_of(2000, 0x00)
        local issuer = adopt.issuer(floor)
        local id = issuer.issue(1500)
        check.equal(millis(id), 2000, 'the floor millisecond')
        check.equal(id:bin('b') > floor:bin('b'), true, 'above the floor')
        check.equal(millis(issuer.issue(2500)), 2500, 'then the clock again')
    end},
    {'a full millisecond carries into the next', function()
        local floor = id_of(3000, 0xff)
        local id = adopt.issuer(floor).issue(3000)
        check.equal(millis(id), 3001, 'next millisecond')
        check.equal(is_v7(id), true, 'v7')
    end},
    {'a floor that is no v7 id is passed', function()
        local b = {id_of(4000, 0x00):bin('b'):byte(1, 16)}
        b[7] = 0xf0
        local floor = uuid.frombin(string.char(unpack(b)), 'b')
        local id = adopt.issuer(floor).issue(4000)
        check.equal(id:bin('b') > floor:bin('b'), true, 'above')
        check.equal(millis(id), 4001, 'next millisecond')
    end},
    {"a report's dialog_id string names the dialog the procedures read", function()
        local u = '0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01'
        local d, why = ids.dialog_of_string(u)
        check.equal(d:str(), u, 'a canonical uuid is itself')
        check.equal(why, nil, 'accepted')
        d, why = ids.dialog_of_string(u:upper())
        check.equal(d:str(), u, 'in either case')
        check.equal(why, nil, 'accepted, upper case')
        local key = u .. '5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02'
        d, why = ids.dialog_of_string(key)
        check.equal(d:str(), ids.dialog_of_key(key):str(), 'a key is its v5')
        check.equal(why, nil, 'a 72-character key is accepted')
        for _, bad in ipairs({'', '{' .. u .. '}', 'urn:uuid:' .. u, (u:gsub('-', '')),
                              string.rep('k', ids.MAX_KEY_BYTES + 1), 'bad \255 key',
                              '00000000-0000-0000-0000-000000000000'}) do
            d, why = ids.dialog_of_string(bad)
            check.equal(type(why), 'string', 'refused: ' .. bad)
            check.equal(d:str(), ids.dialog_of_key(bad):str(), 'kept by its bytes: ' .. bad)
        end
        local longest = string.rep('k', ids.MAX_KEY_BYTES)
        d, why = ids.dialog_of_string(longest)
        check.equal(why, nil, 'a key of the longest length')
        check.equal(d:str(), ids.dialog_of_key(longest):str(), 'its v5')
    end},
}

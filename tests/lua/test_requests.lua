-- dialogs.requests: the age of a request id comes from its message's UUIDv7.

local uuid = require('uuid')

local check = require('check')
local requests = require('dialogs.requests')

return {
    {'the milliseconds of a UUIDv7 are its first 48 bits', function()
        check.equal(requests.uuid_v7_ms(uuid.fromstr('00000000-0000-7000-8000-000000000000')), 0,
            'zero')
        check.equal(requests.uuid_v7_ms(uuid.fromstr('01234567-89ab-7def-8123-456789abcdef')),
            0x0123456789ab, 'pattern')
        -- 2026-01-01T00:00:00Z, and the largest 48-bit value.
        check.equal(requests.uuid_v7_ms(uuid.fromstr('019b76da-a800-7000-8000-000000000000')),
            1767225600000, '2026')
        check.equal(requests.uuid_v7_ms(uuid.fromstr('ffffffff-ffff-7fff-bfff-ffffffffffff')),
            2 ^ 48 - 1, 'max')
    end},

    {'passes come a tenth of the TTL apart, within bounds', function()
        check.equal(requests.period(7 * 24 * 3600), 60, 'a week')
        check.equal(requests.period(300), 30, 'five minutes')
        check.equal(requests.period(1), 0.1, 'a second')
        check.equal(requests.period(0.01), 0.1, 'a hundredth')
    end},
}

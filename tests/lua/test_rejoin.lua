-- dialogs.rejoin: scripts/rejoin's command line, vclocks, the divergence verdict,
-- the export file's lines and the request ids replay derives. The data directory
-- and the console are tested in test_rejoin_old_data.lua and
-- test_rejoin_console.lua; the whole tool against servers in
-- tests/python/test_rejoin.py.

local fio = require('fio')
local json = require('json')

local check = require('check')
local rejoin = require('dialogs.rejoin')

local MSG = {id = '01890a5d-ac96-774b-bcce-b302099a8057',
             dialog_id = '2b9b0a4c-6f3f-4f5e-9a53-0f6c1d1f2a10',
             user_from = '0f0e0d0c-0b0a-4908-8706-050403020100',
             user_to = '10111213-1415-4617-8819-1a1b1c1d1e1f',
             text = 'a «ü»\n"q"', created_at = 1700000000123456,
             request_id = '7c7d9f2e-3b1a-4c5d-8e6f-a1b2c3d4e5f6'}

-- The usage error parse_args raises for `args`, as its message.
local function usage_of(args)
    local ok, err = pcall(rejoin.parse_args, args)
    check.equal(ok, false, 'parse_args raised')
    check.equal(rejoin.is_usage_error(err), true, 'a usage error: ' .. tostring(err))
    return tostring(err)
end

return {
    {'check and export take a data directory and one master', function()
        local o = rejoin.parse_args({'check', 'data/a', '--master-socket', 'b.sock'})
        check.equal({o.command, o.path, o.socket, o.vclock},
            {'check', fio.abspath('data/a'), fio.abspath('b.sock'), nil}, 'check')
        o = rejoin.parse_args({'export', '/d', '--master-vclock', '{1: 12, 2: 40}',
                               '--to', 'x.jsonl', '--wipe'})
        check.equal({o.command, o.path, o.to, o.wipe, o.vclock},
            {'export', '/d', fio.abspath('x.jsonl'), true, {[1] = 12, [2] = 40}}, 'export')
        check.equal(o.socket, nil, 'no socket')
    end},
    {'replay takes a file and a socket only', function()
        local o = rejoin.parse_args({'replay', 'x.jsonl', '--master-socket', '/s'})
        check.equal({o.command, o.path, o.socket}, {'replay', fio.abspath('x.jsonl'), '/s'},
            'replay')
        check.equal(usage_of({'replay', 'x.jsonl', '--master-vclock', '[1]'}),
            'replay takes FILE and --master-socket only', 'a vclock')
        check.equal(usage_of({'replay', 'x.jsonl'}),
            'replay takes FILE and --master-socket only', 'no socket')
        check.equal(usage_of({'replay', '--master-socket', '/s'}), 'which FILE?', 'no file')
    end},
    {'a bad command line is a usage error that says what is wrong', function()
        check.equal(usage_of({}), '', 'no command: the usage alone')
        check.equal(usage_of({'check', '--help'}), '', 'help')
        check.equal(usage_of({'rejoin'}), 'unknown command rejoin', 'command')
        check.equal(usage_of({'check', '/d'}), 'give one of --master-socket or --master-vclock',
            'no master')
        check.equal(usage_of({'check', '/d', '--master-socket', '/s', '--master-vclock', '[1]'}),
            'give one of --master-socket or --master-vclock', 'two masters')
        check.equal(usage_of({'check', '--master-socket', '/s'}), 'which DATA_DIR?', 'no dir')
        check.equal(usage_of({'check', '/d', '/e', '--master-socket', '/s'}),
            'unexpected argument /e', 'two dirs')
        check.equal(usage_of({'check', '/d', '--master-socket'}), '--master-socket needs a value',
            'no value')
        check.equal(usage_of({'check', '/d', '--master-socket', '/s', '--force'}),
            'unknown option --force', 'option')
        check.equal(usage_of({'check', '/d', '--master-socket', '/s', '--wipe'}),
            '--to and --wipe belong to export', 'wipe on check')
        check.equal(usage_of({'export', '/d', '--master-socket', '/s'}), 'export needs --to FILE',
            'no --to')
    end},
    {'a pasted vclock is a map or an array of lsns', function()
        check.equal(rejoin.parse_vclock('{1: 12, 2: 40}'), {[1] = 12, [2] = 40}, 'yaml map')
        check.equal(rejoin.parse_vclock('{"1": 12, "3": 0}'), {[1] = 12, [3] = 0}, 'json map')
        check.equal(rejoin.parse_vclock('[12, 40]'), {[1] = 12, [2] = 40}, 'array')
        check.equal(rejoin.parse_vclock('{}'), {}, 'empty')
    end},
    {'a bad pasted vclock names itself', function()
        local function bad(text)
            return usage_of({'check', '/d', '--master-vclock', text})
        end
        check.equal(bad('12'), '--master-vclock: expected a map {id: lsn, ...}, got "12"',
            'a number')
        check.equal(bad('{1: x}'), '--master-vclock: bad component 1: x in "{1: x}"', 'an lsn')
        check.equal(bad('{1: -1}'), '--master-vclock: bad component 1: -1 in "{1: -1}"',
            'negative')
        check.equal(bad('{1: 1.5}'), '--master-vclock: bad component 1: 1.5 in "{1: 1.5}"',
            'fraction')
        check.equal(bad('{a: 1}'), '--master-vclock: bad component a: 1 in "{a: 1}"', 'an id')
    end},
    {'a vclock prints as a map in replica id order', function()
        check.equal(rejoin.vclock_string({[3] = 7, [1] = 12, [2] = 0}), '{1: 12, 2: 0, 3: 7}',
            'three')
        check.equal(rejoin.vclock_string({}), '{}', 'empty')
        -- What it prints, a pasted vclock reads back.
        local v = {[1] = 5, [4] = 99}
        check.equal(rejoin.parse_vclock(rejoin.vclock_string(v)), v, 'round trip')
    end},
    {'the verdict compares the old instance\'s own component only', function()
        local old = {id = 2, vclock = {[1] = 100, [2] = 40}}
        check.equal({rejoin.verdict(old, {[1] = 3, [2] = 40})}, {'same', 40, 40}, 'same')
        check.equal({rejoin.verdict(old, {[1] = 500, [2] = 37})}, {'diverged', 40, 37},
            'diverged')
        check.equal({rejoin.verdict(old, {[2] = 41})}, {'behind', 40, 41}, 'behind')
        check.equal({rejoin.verdict(old, {[1] = 100})}, {'diverged', 40, 0},
            'the master never got any of its rows')
        check.equal({rejoin.verdict({id = 3, vclock = {[1] = 9}}, {})}, {'same', 0, 0},
            'no rows of its own on either side')
    end},
    {'an export line holds the fields in a fixed order, a missing one as null', function()
        check.equal(rejoin.export_line(MSG), '{"id":"' .. MSG.id .. '","dialog_id":"'
            .. MSG.dialog_id .. '","user_from":"' .. MSG.user_from .. '","user_to":"'
            .. MSG.user_to .. '","text":"a «ü»\\n\\"q\\"","created_at":1700000000123456,'
            .. '"request_id":"' .. MSG.request_id .. '"}\n', 'a message')
        local m = table.copy(MSG)
        m.request_id, m.lsn = nil, 17
        local line = rejoin.export_line(m)
        check.equal(line:match(',"request_id":null}\n$') ~= nil, true, line)
        check.equal(line:find('lsn', 1, true), nil, 'no field beyond the list')
    end},
    {'replay reads back what export writes', function()
        local m = rejoin.parse_export_line(rejoin.export_line(MSG), 'f:1')
        -- json.decode gives an integer this large as a uint64 cdata.
        m.created_at = tonumber(m.created_at)
        check.equal(m, MSG, 'the same message')
    end},
    {'a message exported without a request id gets one derived from its id', function()
        local m = table.copy(MSG)
        m.request_id = nil
        local got = rejoin.parse_export_line(rejoin.export_line(m), 'f:1').request_id
        -- UUIDv5(REPLAY_NAMESPACE, the id's 16 bytes), as Python's hashlib makes it.
        check.equal(got, 'aeb16732-fccb-514e-bf06-8ed8b7ce4986', 'derived')
        check.equal(rejoin.derived_request_id(MSG.id), got, 'derived_request_id')
        check.equal(rejoin.derived_request_id(MSG.id) ~= rejoin.derived_request_id(MSG.user_to),
            true, 'another id, another request id')
    end},
    {'a bad export line names its place and its field', function()
        local function bad(line)
            local ok, err = pcall(rejoin.parse_export_line, line, 'x.jsonl:4')
            check.equal(ok, false, 'raised for ' .. line)
            return err
        end
        check.equal(bad('not json'), 'x.jsonl:4: not a JSON object', 'json')
        check.equal(bad('[1, 2]'), 'x.jsonl:4: id is not a uuid', 'array')
        local m = table.copy(MSG)
        m.user_to = 'nobody'
        check.equal(bad(json.encode(m)), 'x.jsonl:4: user_to is not a uuid', 'user_to')
        m = table.copy(MSG)
        m.text = 5
        check.equal(bad(json.encode(m)), 'x.jsonl:4: text is not a string', 'text')
        m = table.copy(MSG)
        m.request_id = 'r1'
        check.equal(bad(json.encode(m)), 'x.jsonl:4: request_id is not a uuid', 'request_id')
    end},
    {'an export file is read in order, blank lines skipped, a bad line by number', function()
        local dir = fio.tempdir()
        local path = fio.pathjoin(dir, 'x.jsonl')
        local second = table.copy(MSG)
        second.id, second.request_id = MSG.user_from, nil
        local f = io.open(path, 'w')
        f:write(rejoin.export_line(MSG), '\n', rejoin.export_line(second))
        f:close()
        local got = rejoin.read_export(path)
        check.equal({#got, got[1].id, got[2].id, got[2].request_id},
            {2, MSG.id, second.id, rejoin.derived_request_id(second.id)}, 'messages')
        f = io.open(path, 'a')
        f:write('{"id": 1}\n')
        f:close()
        check.raises(path .. ':4: id is not a uuid', rejoin.read_export, path)
        check.raises('cannot open ' .. path .. '.none', rejoin.read_export, path .. '.none')
        fio.unlink(path)
        fio.rmdir(dir)
    end},
}

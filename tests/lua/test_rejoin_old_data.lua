-- dialogs.old_data (scripts/rejoin's offline reading of a stopped instance's data
-- directory) on a data directory a real server wrote: this test starts the same
-- tarantool on a temporary directory, writes messages and request records as the
-- store lays them out, stops it, and reads what it left.

local fio = require('fio')
local json = require('json')

local check = require('check')
local old_data = require('dialogs.old_data')
local rejoin = require('dialogs.rejoin')

-- Run by the server: the store's two spaces and another one; two rows replicated
-- to the new master (before `from`), then what only the old one holds: three
-- messages (one with a request record, one deleted), a row of another space.
-- Prints what it did as JSON.
local WRITER = [[
local json = require('json')
local uuid = require('uuid')
box.cfg{work_dir = arg[1], log = arg[2]}
local function space(name, parts)
    box.schema.space.create(name):create_index('pk', {parts = parts})
end
space('dialogs', {{1, 'uuid'}})
space('dialogs_requests', {{1, 'uuid'}})
space('other', {{1, 'unsigned'}})
local function message(i, text)
    local id = uuid.new()
    box.space.dialogs:insert({id, uuid.fromstr(arg[3]), uuid.fromstr(arg[4]),
                              uuid.fromstr(arg[5]), text, 1700000000000000 + i})
    return id:str()
end
local out = {replicated = message(0, 'replicated')}
out.from = box.info.vclock[box.info.id]
out.first = message(1, 'first «ü»\n"q"')
out.request = uuid.new():str()
box.space.dialogs_requests:insert({uuid.fromstr(out.request), uuid.fromstr(out.first)})
out.deleted = message(2, 'deleted')
box.space.dialogs:delete({uuid.fromstr(out.deleted)})
out.second = message(3, 'second')
box.space.other:insert({1})
out.lsn = box.info.vclock[box.info.id]
out.instance, out.id = box.info.uuid, box.info.id
print(json.encode(out))
os.exit(0)
]]

local DIALOG = '2b9b0a4c-6f3f-4f5e-9a53-0f6c1d1f2a10'
local USER_FROM = '0f0e0d0c-0b0a-4908-8706-050403020100'
local USER_TO = '10111213-1415-4617-8819-1a1b1c1d1e1f'

-- Runs f(data_dir, written) on a fresh directory WRITER filled, then removes it.
local function with_old_data(f)
    local tmp = fio.tempdir()
    local data = fio.pathjoin(tmp, 'data')
    fio.mkdir(data)
    local script = fio.pathjoin(tmp, 'writer.lua')
    local w = io.open(script, 'w')
    w:write(WRITER)
    w:close()
    local cmd = table.concat({arg[-1], script, data, fio.pathjoin(tmp, 'server.log'), DIALOG,
                              USER_FROM, USER_TO}, ' ')
    local p = io.popen(cmd, 'r')
    local out = p:read('*a')
    p:close()
    local ok, written = pcall(json.decode, out:match('{.*}') or '')
    local ok2, err = true, nil
    if ok then
        ok2, err = pcall(f, data, written)
    end
    fio.rmtree(tmp)
    if not ok then
        error('the writer printed ' .. out, 0)
    end
    if not ok2 then
        error(err, 0)
    end
end

return {
    {'its uuid, replica id, vclock and spaces come from its own files', function()
        with_old_data(function(data, w)
            local d = old_data.read(data)
            check.equal({d.dir, d.instance, d.id}, {data, w.instance, w.id}, 'who')
            check.equal(d.vclock[w.id], w.lsn, 'its own component')
            check.equal(d.members[w.instance], w.id, 'in its _cluster')
            check.equal(d.spaces.dialogs ~= nil and d.spaces.dialogs_requests ~= nil, true,
                'the store\'s spaces')
            check.equal(#d.xlogs >= 1 and #d.xlog_starts == #d.xlogs, true, 'the WAL files')
            local snap = fio.glob(fio.pathjoin(data, '*.snap'))[1]
            check.equal(old_data.file_meta(snap).instance, w.instance, 'snapshot header')
            check.equal(rejoin.verdict(d, {[w.id] = w.from}), 'diverged', 'verdict')
        end)
    end},
    {'the diverged messages are those after the master\'s lsn, not deleted, in order',
     function()
        with_old_data(function(data, w)
            local d = old_data.read(data)
            local messages, others, rolled_back = old_data.diverged_messages(d, w.from)
            check.equal(messages, {
                {id = w.first, dialog_id = DIALOG, user_from = USER_FROM, user_to = USER_TO,
                 text = 'first «ü»\n"q"', created_at = 1700000000000001, lsn = w.from + 1,
                 request_id = w.request},
                {id = w.second, dialog_id = DIALOG, user_from = USER_FROM, user_to = USER_TO,
                 text = 'second', created_at = 1700000000000003, lsn = w.lsn - 1},
            }, 'messages')
            check.equal(others, {['other INSERT'] = 1}, 'other rows')
            check.equal(rolled_back, 0, 'rolled back')
            -- A master that has every row: nothing diverged.
            check.equal(#old_data.diverged_messages(d, w.lsn), 0, 'nothing after the last')
        end)
    end},
    {'a WAL cut by the kill is read up to the cut', function()
        with_old_data(function(data, w)
            -- A killed server leaves its rows in its newest WAL file, without the
            -- end-of-file marker (4 bytes) and here without the last row's tail.
            -- (A clean exit also opens an empty file after it: gone on a kill.)
            local xlogs = fio.glob(fio.pathjoin(data, '*.xlog'))
            table.sort(xlogs)
            local last = xlogs[1]
            for i = 2, #xlogs do
                fio.unlink(xlogs[i])
            end
            fio.truncate(last, fio.stat(last).size - 8)
            local d = old_data.read(data)
            check.equal(d.vclock[w.id], w.lsn - 1, 'the last row is gone')
            local messages, others = old_data.diverged_messages(d, w.from)
            check.equal({#messages, others}, {2, {}}, 'the messages before it')
        end)
    end},
    {'what is not a stopped instance\'s data directory is refused by name', function()
        local tmp = fio.tempdir()
        check.raises(tmp .. ' holds no snapshot: not a Tarantool data directory',
            old_data.read, tmp)
        local file = fio.pathjoin(tmp, 'f')
        local f = io.open(file, 'w')
        f:write('SNAP\n0.13\n\n')
        f:close()
        check.raises(file .. ': not a Tarantool WAL or snapshot file (no Instance/VClock header)',
            old_data.file_meta, file)
        check.raises(file .. ' is not a directory', old_data.read, file)
        fio.rmtree(tmp)
    end},
}

-- dialogs.backup's pure parts and its files (scripts/backup): the command line,
-- where an xlog copy is cut, which live files a backup copies, and the check of a
-- backup against its manifest. Taking one needs a server: tests/python/test_backup.py.

local fio = require('fio')
local json = require('json')
local msgpack = require('msgpack')

local backup = require('dialogs.backup')
local check = require('check')

local MAGIC = '\xd5\xba\x0b\xab'
local EOF_MARKER = '\xd5\x10\xad\xed'
local HEADER = 'XLOG\n0.13\nVersion: 2.6.0\nVClock: {1: 2}\n\n'

-- One transaction as Tarantool frames it: magic, msgpack length, two crcs, then
-- padding to 19 bytes, then `payload`.
local function tx(payload)
    local fixed = msgpack.encode(#payload) .. msgpack.encode(0) .. msgpack.encode(0)
    return MAGIC .. fixed .. string.rep('\0', 19 - 4 - #fixed) .. payload
end

local function with_dir(f)
    local dir = fio.tempdir()
    local ok, err = pcall(f, dir)
    os.execute('rm -rf ' .. dir)
    if not ok then
        error(err, 0)
    end
end

local function write(path, data)
    local fh = fio.open(path, {'O_WRONLY', 'O_CREAT', 'O_TRUNC'}, tonumber('644', 8))
    fh:write(data)
    fh:close()
end

return {
    {'the command line', function()
        check.equal(backup.parse_args({'take', 's.sock', 'out'}),
            {command = 'take', socket = 's.sock', dest = 'out'}, 'take')
        check.equal(backup.parse_args({'restore', 'b', 'd'}),
            {command = 'restore', backup = 'b', data_dir = 'd'}, 'restore')
        check.equal(backup.parse_args({'take-cluster', 'out', 's1=a.sock', 's2=b.sock'}),
            {command = 'take-cluster', dest = 'out', members = {
                {name = 's1', socket = 'a.sock'}, {name = 's2', socket = 'b.sock'}}},
            'take-cluster')
        for _, bad in ipairs({{}, {'take', 's.sock'}, {'check', 'b', 'extra'}, {'copy'},
                {'take-cluster', 'out'}, {'take-cluster', 'out', 'a.sock'},
                {'take-cluster', 'out', 's1=a.sock', 's1=b.sock'}}) do
            local ok, err = pcall(backup.parse_args, bad)
            check.equal({ok, backup.is_usage_error(err)}, {false, true}, json.encode(bad))
        end
    end},
    {'an xlog copy is cut after its last whole transaction', function()
        local a, b = tx(string.rep('a', 40)), tx(string.rep('b', 300))
        local whole = HEADER .. a .. b
        check.equal(backup.whole_tx_length(whole), #whole, 'whole')
        check.equal(backup.whole_tx_length(whole .. EOF_MARKER), #whole + 4, 'finished')
        -- Cut inside the second transaction's rows, and inside its fixed header.
        check.equal(backup.whole_tx_length(whole:sub(1, #whole - 5)), #HEADER + #a, 'rows')
        check.equal(backup.whole_tx_length(HEADER .. a .. b:sub(1, 10)), #HEADER + #a, 'fix')
        check.equal(backup.whole_tx_length(HEADER), #HEADER, 'no transaction yet')
        check.equal(backup.whole_tx_length('XLOG\n0.13\n'), nil, 'header cut')
    end},
    {'a backup copies the pinned snapshot and the WAL from the file holding it', function()
        local info = {
            memtx_dir = '/d', wal_dir = '/d', vinyl_dir = '/d',
            files = {'/d/00000000000000000100.snap'},
            xlogs = {'/d/00000000000000000150.xlog', '/d/00000000000000000000.xlog',
                     '/d/00000000000000000090.xlog', '/d/00000000000000000100.xlog'},
        }
        check.equal(backup.files_to_copy(info), {
            {path = '/d/00000000000000000100.snap', name = '00000000000000000100.snap'},
            {path = '/d/00000000000000000100.xlog', name = '00000000000000000100.xlog'},
            {path = '/d/00000000000000000150.xlog', name = '00000000000000000150.xlog'},
        }, '2.x: the snapshot alone listed')
        -- 3.x lists the WAL too (no file twice); no WAL begins at the snapshot.
        info.files = {'/d/00000000000000000120.snap', '/d/00000000000000000100.xlog',
                      '/v/512/0/00000000000000000001.run'}
        info.vinyl_dir = '/v'
        check.equal(backup.files_to_copy(info), {
            {path = '/d/00000000000000000120.snap', name = '00000000000000000120.snap'},
            {path = '/d/00000000000000000100.xlog', name = '00000000000000000100.xlog'},
            {path = '/v/512/0/00000000000000000001.run', name = '512/0/00000000000000000001.run'},
            {path = '/d/00000000000000000150.xlog', name = '00000000000000000150.xlog'},
        }, '3.x')
    end},
    {'a cluster backup holds each bucket once', function()
        check.equal(backup.check_buckets({s1 = {1, 2, 3}, s2 = {4, 5}}), 5, 'total')
        check.raises('bucket 3 is in the backups of both s1 and s2', backup.check_buckets,
            {s1 = {1, 2, 3}, s2 = {3, 4}})
    end},
    {'a destination must be absent or empty', function()
        with_dir(function(dir)
            backup.check_empty_dir(fio.pathjoin(dir, 'new'), 'DEST')
            backup.check_empty_dir(dir, 'DEST')
            write(fio.pathjoin(dir, 'x'), 'x')
            local ok, err = pcall(backup.check_empty_dir, dir, 'DEST')
            check.equal({ok, backup.is_refusal(err)}, {false, true}, 'not empty')
            check.equal(tostring(err), 'DEST ' .. dir .. ' is not empty (1 entries); '
                .. 'refusing to write there', 'message')
            ok, err = pcall(backup.check_empty_dir, fio.pathjoin(dir, 'x'), 'DEST')
            check.equal({ok, backup.is_refusal(err)}, {false, true}, 'a file')
        end)
    end},
    {'check and restore verify every file against the manifest', function()
        with_dir(function(dir)
            local b = fio.pathjoin(dir, 'b')
            fio.mktree(b)
            write(fio.pathjoin(b, '1.snap'), 'snapshot bytes')
            local sum, size = backup.sha256_of(fio.pathjoin(b, '1.snap'))
            check.equal({sum, size}, {'ee36ef8194c4dd1e734e6d64f6265300'
                .. '8e6566dbd5e2cd7f289f0f4f3e4467a4', 14}, 'sha256 (as sha256sum prints it)')
            local manifest = {format = 1, complete = true, files = {
                {name = '1.snap', size = size, sha256 = sum}}}
            write(fio.pathjoin(b, 'manifest.json'), json.encode(manifest))
            check.equal(backup.check(b).files[1].name, '1.snap', 'matches')
            local data = fio.pathjoin(dir, 'data')
            backup.restore(b, data)
            check.equal(backup.sha256_of(fio.pathjoin(data, '1.snap')), sum, 'restored')
            check.raises('DATA_DIR ' .. data .. ' is not empty (1 entries); '
                .. 'refusing to write there', backup.restore, b, data)
            write(fio.pathjoin(b, '1.snap'), 'snapshot bytez')
            check.raises(b .. ' does not match its manifest:\n  1.snap: sha256 differs from '
                .. 'the manifest', backup.check, b)
            fio.unlink(fio.pathjoin(b, '1.snap'))
            check.raises(b .. ' does not match its manifest:\n  1.snap: missing', backup.check, b)
            manifest.complete, manifest.error = false, 'the console went away'
            write(fio.pathjoin(b, 'manifest.json'), json.encode(manifest))
            check.raises(b .. ': the backup is incomplete: the console went away',
                backup.check, b)
        end)
    end},
}

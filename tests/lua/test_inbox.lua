-- dialogs.inbox: the expected entries of a dialog, worked out from its messages,
-- and their comparison with a stored entry (the pure parts of the recount; the
-- recount itself runs on a server in tests/python/test_inbox.py).

local check = require('check')
local inbox = require('dialogs.inbox')

local NONE = inbox.NONE
local A = 'aaaaaaaa-0000-4000-8000-000000000000'
local B = 'bbbbbbbb-0000-4000-8000-000000000000'
local C = 'cccccccc-0000-4000-8000-000000000000'

-- Message ids in increasing order.
local function id(n)
    return string.format('0190a000-0000-7000-8000-%012d', n)
end

-- The expected entries of the messages {from, to} (ids 1, 2, ... in order, text
-- 'm<n>'), with `reads` the stored read_id per user; by user.
local function expect(messages, reads)
    local asked = {}
    local acc = inbox.dialog_accumulator(function(user)
        check.equal(asked[user], nil, 'stored_read asked twice for ' .. user)
        asked[user] = true
        return (reads or {})[user]
    end)
    for i, m in ipairs(messages) do
        acc.add(id(i), m[1], m[2], 'm' .. i)
    end
    local out = {}
    for _, e in ipairs(acc.entries()) do
        out[e.user_id] = e
    end
    return out
end

local function entry(e)
    return {user_id = e.user_id, peer_id = e.peer_id, last_id = e.last_id,
            last_from = e.last_from, last_text = e.last_text, unread = e.unread,
            read_id = e.read_id, peer_read_min = e.peer_read_min,
            peer_read_max = e.peer_read_max}
end

-- A stored entry (the tuple's fields by number) equal to the expected `e`, with
-- `peer_read` as its receipt and the fields of `change` replaced.
local function stored(e, peer_read, change)
    local t = {e.user_id, 'dialog', e.peer_id, e.last_id, e.last_from, e.last_text, e.unread,
               e.read_id, peer_read, 7}
    for k, v in pairs(change or {}) do
        t[k] = v
    end
    return t
end

local function with_bucket(e)
    e.bucket_id = 7
    return e
end

return {
    {'the recipient has unread, the sender has read; the receipt is the sender\'s', function()
        local got = expect({{A, B}, {A, B}})
        check.equal(entry(got[A]), {user_id = A, peer_id = B, last_id = id(2), last_from = A,
            last_text = 'm2', unread = 0, read_id = id(2), peer_read_min = NONE,
            peer_read_max = NONE}, 'sender')
        check.equal(entry(got[B]), {user_id = B, peer_id = A, last_id = id(2), last_from = A,
            last_text = 'm2', unread = 2, read_id = NONE, peer_read_min = id(2),
            peer_read_max = id(2)}, 'recipient')
    end},
    {'a reply reads the dialog; what came after it is unread', function()
        local got = expect({{A, B}, {B, A}, {A, B}, {A, B}})
        check.equal({got[B].unread, got[B].read_id, got[B].peer_id}, {2, id(2), A}, 'B')
        check.equal({got[A].unread, got[A].read_id}, {0, id(4)}, 'A')
        -- A's receipt: B has read up to its own reply, and no further.
        check.equal({got[A].peer_read_min, got[A].peer_read_max}, {id(2), id(2)}, 'A receipt')
        check.equal({got[B].peer_read_min, got[B].peer_read_max}, {id(4), id(4)}, 'B receipt')
    end},
    {'a stored read cursor (mark_read) counts only what is after it', function()
        local got = expect({{A, B}, {A, B}, {A, B}}, {[B] = id(2)})
        check.equal({got[B].unread, got[B].read_id}, {1, id(2)}, 'B')
        -- The sender's receipt may show B's cursor.
        check.equal(got[A].peer_read_max, id(2), 'A receipt bound')
        -- A cursor at the last message: nothing unread.
        got = expect({{A, B}, {A, B}}, {[B] = id(2)})
        check.equal(got[B].unread, 0, 'all read')
    end},
    {'a stored cursor behind the user\'s own message is moved up to it', function()
        local got = expect({{A, B}, {B, A}, {A, B}}, {[B] = id(1), [A] = NONE})
        check.equal({got[B].read_id, got[B].unread}, {id(2), 1}, 'B')
    end},
    {'a note to self: one entry, its own peer, nothing unread, no receipt', function()
        local got = expect({{A, A}, {A, A}})
        local n = 0
        for _ in pairs(got) do
            n = n + 1
        end
        check.equal(n, 1, 'entries')
        check.equal(entry(got[A]), {user_id = A, peer_id = A, last_id = id(2), last_from = A,
            last_text = 'm2', unread = 0, read_id = id(2), peer_read_min = NONE,
            peer_read_max = NONE}, 'entry')
    end},
    {'a dialog of three users: each entry from its own messages', function()
        local got = expect({{A, B}, {C, A}, {B, C}})
        check.equal({got[A].last_id, got[A].peer_id, got[A].unread, got[A].read_id},
            {id(2), C, 1, id(1)}, 'A')
        check.equal({got[B].last_id, got[B].peer_id, got[B].unread, got[B].read_id},
            {id(3), C, 0, id(3)}, 'B')
        check.equal({got[C].last_id, got[C].peer_id, got[C].unread, got[C].read_id},
            {id(3), B, 1, id(2)}, 'C')
        -- The receipt is bounded by the greatest cursor of the others.
        check.equal({got[A].peer_read_min, got[A].peer_read_max}, {id(2), id(3)}, 'A receipt')
        check.equal({got[B].peer_read_min, got[B].peer_read_max}, {id(1), id(2)}, 'B receipt')
    end},
    {'a stored entry equal to the expected one has no difference', function()
        local got = expect({{A, B}, {B, A}})
        for _, user in ipairs({A, B}) do
            local want = with_bucket(got[user])
            local diffs, behind = inbox.compare_entry(stored(want, want.peer_read_max), want)
            check.equal(diffs, {}, user)
            check.equal(behind, false, user .. ' behind')
            check.equal(want.peer_read_id, want.peer_read_max, user .. ' receipt')
        end
    end},
    {'every differing field is named, with what is stored and what is expected', function()
        local want = with_bucket(expect({{A, B}, {A, B}})[B])
        local t = stored(want, id(2), {[4] = id(1), [6] = 'm1', [7] = 5, [8] = id(1), [10] = 8})
        local diffs = inbox.compare_entry(t, want)
        check.equal(diffs, {{'last_id', id(1), id(2)}, {'last_text', 'm1', 'm2'},
            {'unread', 5, 2}, {'read_id', id(1), NONE}, {'bucket_id', 8, 7}}, 'diffs')
        check.equal(inbox.describe('wrong', B, 'D', {diffs[3]}),
            'wrong: user ' .. B .. ', dialog D: unread 5, expected 2', 'sample')
    end},
    {'a receipt behind the peer is counted apart; ahead of it, or below a message, '
        .. 'it is wrong', function()
        local want = with_bucket(expect({{A, B}, {B, A}, {A, B}}, {[B] = id(3)})[A])
        check.equal({want.peer_read_min, want.peer_read_max}, {id(2), id(3)}, 'bounds')
        local diffs, behind = inbox.compare_entry(stored(want, id(2)), want)
        check.equal({diffs, behind, want.peer_read_id}, {{}, true, id(2)}, 'behind')
        diffs, behind = inbox.compare_entry(stored(want, id(4)), want)
        check.equal({diffs, behind}, {{{'peer_read_id', id(4), id(3)}}, false}, 'ahead')
        diffs = inbox.compare_entry(stored(want, NONE), want)
        check.equal(diffs, {{'peer_read_id', NONE, id(3)}}, 'below the peer\'s message')
    end},
}

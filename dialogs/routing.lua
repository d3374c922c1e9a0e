-- dialogs.routing: a client's call on a vshard router, from its check to its
-- reply (the lifecycle of the router, its functions, bootstrap and role, is
-- dialogs.router's).
--
-- Clients call a router exactly as they call a single store: `new_dialog` and
-- `get_dialog`, the same arguments, replies and errors (docs/sharding.md, "What a
-- client sees"). Both are Lua functions here that
--
--   1. check the call with the native module's own parser (the C function
--      `dialogs_route`, from the same library as the procedures): a bad call gets
--      the procedure's error, code and message, and no storage is asked; a good
--      one gets its dialog's bucket (for a nil dialog_id, the user pair's dialog);
--   2. refuse it (SHARDING) if this router's bucket count is not the one the
--      storages keep: the bucket it computed is then not the dialog's;
--   3. send it to the bucket's replica set: writes with callrw (the master),
--      reads with callbro (any member, replicas included);
--   4. raise a storage procedure's error unchanged, and turn vshard's own errors
--      into the documented codes below, retryable ones marked.
--
-- On a server whose Lua functions can take their arguments undecoded
-- (`takes_raw_args`, with msgpack objects), the client's argument bytes go to
-- the check and on to the storage as they came, and get_dialog's page comes
-- back to the client as it left the storage (vshard's `return_raw`): the router
-- decodes neither. Elsewhere both travel as Lua values.

local fiber = require('fiber')
local log = require('log')
local msgpack = require('msgpack')

local sharding = require('dialogs.sharding')
local storage = require('dialogs.storage')

local M = {}

-- The router's own error codes (README, "Errors"): after the procedures' 1001..1008.
M.UNAVAILABLE = 1009 -- retryable: the dialog's replica set cannot take the call now
M.MOVING = 1010 -- retryable: the dialog's bucket is moving between replica sets
M.SHARDING = 1011 -- not retryable: vshard refused for another reason (misconfiguration)

-- The native check of a call (src/route.rs).
M.ROUTE_FUNCTION = 'dialogs_route'

-- vshard errors by name: a bucket on the move (the router retries these itself
-- until its timeout)...
local MOVING = {
    WRONG_BUCKET = true,
    TRANSFER_IS_IN_PROGRESS = true,
    BUCKET_IS_LOCKED = true,
    TOO_MANY_RECEIVING = true,
}
-- ...and a replica set that cannot serve right now (down, failing over, starting).
local UNAVAILABLE = {
    NON_MASTER = true,
    MISSING_MASTER = true,
    UNREACHABLE_MASTER = true,
    UNREACHABLE_REPLICASET = true,
    UNREACHABLE_REPLICA = true,
    NO_ROUTE_TO_BUCKET = true,
    REPLICASET_IN_BACKOFF = true,
    STORAGE_IS_DISABLED = true,
    STORAGE_CFG_IS_IN_PROGRESS = true,
    ROUTER_CFG_IS_IN_PROGRESS = true,
    ROUTER_IS_DISABLED = true,
    VHANDSHAKE_NOT_COMPLETE = true,
    MASTER_NOT_SYNCED = true,
    UNKNOWN_BUCKETS = true,
}
-- Tarantool's own errors on the way to a storage (a connection that failed or
-- timed out, an instance still loading, a write that met a replica).
local UNAVAILABLE_BOX = {
    [box.error.NO_CONNECTION] = true,
    [box.error.TIMEOUT] = true,
    [box.error.LOADING] = true,
    [box.error.READONLY] = true,
}
local UNAVAILABLE_TYPES = {SocketError = true, TimedOut = true}

-- What the router runs with: set by dialogs.router when it starts serving.
local state = {
    bucket_count = nil,
    call_timeout = sharding.DEFAULT_CALL_TIMEOUT_S,
    -- Whether a C procedure's results reach clients wrapped in one array: then a
    -- direct new_dialog's reply is {id}, and the router's must be too.
    wrap_id = true,
    -- vshard.router's callrw, callbro, route and routeall.
    callrw = nil,
    callbro = nil,
    route = nil,
    routeall = nil,
    -- The bucket count the storages keep, once read (nil before): the router
    -- serves only while it is bucket_count.
    cluster_count = nil,
    -- Whether the client functions take the client's argument bytes as one
    -- msgpack object (set by register_functions()).
    raw = false,
}

local function raise(code, message)
    box.error({code = code, reason = message})
end

-- Whose replica set a procedure's call goes to, for its messages: a user's
-- inbox lives in the user's bucket (list_dialogs), everything else in the
-- dialog's.
local function whose(proc)
    return proc == 'list_dialogs' and 'the user\'s' or 'the dialog\'s'
end

-- Raises the error a routed call of `proc` ended with.
function M.raise_routed_error(proc, err)
    if type(err) ~= 'table' then
        raise(M.SHARDING, string.format('%s: sharding error: %s', proc, tostring(err)))
    end
    if err.type == 'dialogs' then
        if err.code == storage.WRITE_REFUSED then
            if M.refused_in_transit(err) then
                raise(M.MOVING, string.format('%s: %s is moving to another replica set; '
                    .. 'retry: %s', proc, proc == 'list_dialogs' and 'the user\'s inbox'
                    or 'the dialog', tostring(err.message)))
            end
            -- The storage's entry refused the bucket although vshard holds it
            -- there for the call: it is not the dialog's (misconfiguration).
            raise(M.SHARDING, string.format('%s: sharding error: %s', proc,
                tostring(err.message)))
        end
        -- The storage procedure's own error: as a direct call would get it.
        raise(err.code, err.message)
    end
    local message = tostring(err.message)
    if err.type == 'ShardingError' then
        local name = tostring(err.name)
        if MOVING[name] then
            raise(M.MOVING, string.format('%s: %s is moving to another replica '
                .. 'set; retry: %s: %s', proc, proc == 'list_dialogs' and 'the user\'s inbox'
                or 'the dialog', name, message))
        elseif UNAVAILABLE[name] then
            raise(M.UNAVAILABLE, string.format('%s: %s replica set is '
                .. 'unavailable; retry: %s: %s', proc, whose(proc), name, message))
        end
        raise(M.SHARDING, string.format('%s: sharding error: %s: %s', proc, name, message))
    end
    if UNAVAILABLE_BOX[err.code] or UNAVAILABLE_TYPES[err.type]
            or (err.code == box.error.PROC_LUA and message == 'Timeout exceeded') then
        raise(M.UNAVAILABLE, string.format('%s: %s replica set is unavailable; '
            .. 'retry: %s', proc, whose(proc), message))
    end
    raise(M.SHARDING, string.format('%s: sharding error: %s', proc, message))
end

-- A write to a bucket whose replica set's master is down right now (its
-- connection lost and being retried) is refused at once, instead of waiting
-- for the master until the call's timeout.
local function check_master(proc, call, bucket_id)
    if call ~= state.callrw then
        return
    end
    local replicaset = state.route(bucket_id)
    local master = replicaset ~= nil and replicaset.master or nil
    local conn = master ~= nil and master.conn or nil
    if conn ~= nil and conn.state == 'error_reconnect' then
        raise(M.UNAVAILABLE, string.format('%s: %s replica set is unavailable; '
            .. 'retry: UNREACHABLE_MASTER: the master %s is not connected: %s', proc,
            whose(proc), tostring(master.name or master.uri), tostring(conn.error)))
    end
end

-- What is left of a call's time until `deadline` (fiber.clock()), at least 1 ms:
-- the ordinary way after a direct call gets the rest of DIALOGS_ROUTER_TIMEOUT.
local function time_left(deadline)
    return math.max(deadline - fiber.clock(), 0.001)
end

-- The refusal of a router whose bucket count is not the cluster's: it names both.
local function count_mismatch(cluster_count)
    return string.format('this router was started with %d buckets, but the cluster\'s '
        .. 'storages keep %d: it serves no call until it is started with %d '
        .. '(DIALOGS_BUCKET_COUNT; sharding.bucket_count on Tarantool 3)',
        state.bucket_count, cluster_count, cluster_count)
end

-- Notes the count the storages keep; a count other than the router's is logged
-- once.
function M.learn_cluster_count(count)
    if state.cluster_count == count then
        return
    end
    state.cluster_count = count
    if count ~= state.bucket_count then
        log.error('dialogs: %s', count_mismatch(count))
    end
end

-- How long one replica set may take to tell its bucket count, seconds.
M.COUNT_TIMEOUT_S = 1

-- Asks the replica sets for the bucket count they keep (storage.COUNT_FUNCTION
-- on any member): returns the first count that differs from this router's, else
-- this router's if some replica set told it, else nil; and whether every replica
-- set told one. With `first`, stops at the first answer.
function M.read_cluster_count(first, timeout)
    local agreed, all = nil, true
    for _, replicaset in pairs(state.routeall()) do
        local ok, count = pcall(replicaset.callbro, replicaset, storage.COUNT_FUNCTION, {},
            {timeout = timeout})
        if ok and type(count) == 'number' then
            if count ~= state.bucket_count then
                return count, false
            end
            agreed = count
            if first then
                return agreed, false
            end
        else
            all = false
        end
    end
    return agreed, all
end

-- Raises unless this router's bucket count is the one the storages keep; reads
-- it first if it has not yet (the bootstrap fiber usually has). `proc` names the
-- call in the error.
local function check_count(proc, timeout)
    if state.cluster_count == nil then
        local count = M.read_cluster_count(true, math.min(timeout, M.COUNT_TIMEOUT_S))
        if count == nil then
            raise(M.UNAVAILABLE, string.format('%s: the dialog\'s replica set is '
                .. 'unavailable; retry: no storage told its bucket count yet', proc))
        end
        M.learn_cluster_count(count)
    end
    if state.cluster_count ~= state.bucket_count then
        raise(M.SHARDING, string.format('%s: %s', proc, count_mismatch(state.cluster_count)))
    end
end

-- Whether `err` is a storage entry's refusal (through vshard.storage.call) of a
-- bucket whose status changed under vshard's reference: vshard 0.1.42 makes a
-- bucket it starts to send read-only while write references taken just before
-- are held (it then waits for them), and the entries, which read _bucket
-- themselves, refuse it; the entry wrote nothing. A refusal that names the
-- dialog's (user's) own bucket is a misconfiguration instead.
function M.refused_in_transit(err)
    return type(err) == 'table' and err.type == 'dialogs' and err.code == storage.WRITE_REFUSED
        and (tostring(err.message):find(': status ', 1, true) ~= nil
             or tostring(err.message):find(': not found', 1, true) ~= nil)
end

-- How long the ordinary way waits before it calls again after such a refusal.
local IN_TRANSIT_RETRY_S = 0.01

-- The storage functions of the ordinary way take the bucket and the client's
-- arguments, and refuse a bucket that is not the dialog's (dialogs.storage).
-- `name`: the storage function, when it is not the procedure's own (a step of
-- mark_read).
local function routed(proc, call, args, bucket_id, timeout, name)
    bucket_id = bucket_id or box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, proc, args})
    check_master(proc, call, bucket_id)
    local deadline = fiber.clock() + (timeout or state.call_timeout)
    while true do
        local result, err = call(bucket_id, name or storage.FUNCTIONS[proc], {bucket_id, args},
            {timeout = time_left(deadline)})
        if err == nil then
            return result
        end
        if not M.refused_in_transit(err) or fiber.clock() >= deadline then
            M.raise_routed_error(proc, err)
        end
        -- The bucket started to move after vshard took its reference: vshard
        -- refuses the next call's reference, and follows the bucket.
        fiber.sleep(IN_TRANSIT_RETRY_S)
    end
end

-- vshard errors after which the storage did not run the procedure and vshard's
-- router, called without return_raw, tries again (another replica set, a new
-- master) until its timeout.
local RETRIED = {
    WRONG_BUCKET = true,
    BUCKET_IS_LOCKED = true,
    TRANSFER_IS_IN_PROGRESS = true,
    NON_MASTER = true,
}

local function is_object(v)
    return type(v) == 'userdata' and msgpack.is_object(v)
end

local function array_header(it)
    return it:decode_array_header()
end

-- The one element of a msgpack object that is a one-element array, undecoded;
-- nil for anything else.
local function sole_element(object)
    local it = object:iterator()
    local ok, count = pcall(array_header, it)
    if not ok or count ~= 1 then
        return nil
    end
    return it:take()
end

-- The one value of a storage function's reply taken with return_raw (`result`,
-- a msgpack object of the values), undecoded: or nil and the error. The
-- procedure's own error comes as a second value ({nil, error}); vshard 0.1.42
-- returns a storage's refusal (a bucket that moved or is moving) in place of the
-- value (it decodes the storage's nil status as box.NULL, which counts as true):
-- a map, where get_dialog's page is an array. (Only the header is read: indexing
-- or decoding a page costs as much as the whole router.)
local function raw_value(result)
    local value = sole_element(result)
    if value == nil then
        return nil, result:decode()[2]
    end
    if not pcall(array_header, value:iterator()) then
        return nil, value:decode()
    end
    return value
end

-- routed() of a read whose arguments came as one msgpack object (`raw`, the
-- client's argument array as sent): returns the storage function's one value as
-- a msgpack object, undecoded. With return_raw, vshard 0.1.42 hands a storage's
-- refusal back (a bucket that moved or is moving) instead of trying again; then
-- the call is made once more the ordinary way, which retries and refreshes the
-- router's idea of where the bucket is, and its one (decoded) value is returned.
local function routed_raw(proc, call, raw, bucket_id, timeout)
    bucket_id = bucket_id or box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, proc, raw})
    timeout = timeout or state.call_timeout
    local name = storage.FUNCTIONS[proc]
    local deadline = fiber.clock() + timeout
    local result, err = call(bucket_id, name, {bucket_id, raw},
        {timeout = timeout, return_raw = true})
    if is_object(result) then
        result, err = raw_value(result)
        if err == nil then
            return result
        end
    elseif err == nil then
        -- A vshard without return_raw: the value decoded.
        return result
    elseif is_object(err) then
        err = err:decode()[1]
    end
    if type(err) == 'table' and err.type == 'ShardingError' and RETRIED[err.name] then
        result, err = call(bucket_id, name, {bucket_id, raw},
            {timeout = time_left(deadline)})
        if err == nil then
            return result
        end
    end
    M.raise_routed_error(proc, err)
end

-- A read through one of the storages' native read entries (`entry`:
-- storage.READ_FUNCTION for get_dialog, storage.INBOX_FUNCTIONS.list), called
-- directly on the bucket's replica set with `method` ('callbro': any member;
-- 'callrw': the master): its one value, undecoded where `raw` (the client's
-- argument bytes as one msgpack object), else decoded. Where a C function's
-- results travel wrapped in one array (state.wrap_id, as on the storages),
-- that value comes as [value]. Returns the value, or nil when the entry did not
-- answer (it refused the bucket, or vshard or the connection failed): the
-- caller then takes the ordinary way, which retries and refreshes where the
-- bucket is.
local function read_direct(entry, method, bucket_id, args, raw)
    local replicaset = state.route(bucket_id)
    if replicaset == nil then
        return nil
    end
    local result, err
    if raw then
        result, err = replicaset[method](replicaset, entry, {bucket_id, args},
            {timeout = state.call_timeout, return_raw = true})
        if err ~= nil or not is_object(result) then
            return nil
        end
        local value = sole_element(result)
        if value ~= nil and state.wrap_id then
            value = sole_element(value)
        end
        return value
    end
    result, err = replicaset[method](replicaset, entry, {bucket_id, args},
        {timeout = state.call_timeout})
    if err ~= nil or type(result) ~= 'table' then
        return nil
    end
    if state.wrap_id then
        result = result[1]
    end
    return result
end

local function get_dialog_routed(call_args, raw)
    local bucket_id = box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, 'get_dialog',
        call_args})
    if state.cluster_count ~= state.bucket_count then
        check_count('get_dialog', state.call_timeout)
    end
    -- The ordinary way gets what is left of the call's time (DIALOGS_ROUTER_TIMEOUT
    -- covers both).
    local deadline = fiber.clock() + state.call_timeout
    local page = read_direct(storage.READ_FUNCTION, 'callbro', bucket_id, call_args, raw)
    if page ~= nil then
        return page
    end
    if raw then
        return routed_raw('get_dialog', state.callbro, call_args, bucket_id,
            time_left(deadline))
    end
    return routed('get_dialog', state.callbro, call_args, bucket_id, time_left(deadline))
end

-- Errors of the storages' write entry after which it wrote nothing: its refusal
-- of the bucket, an instance that cannot write now (a replica: 1006, the
-- procedures' read-only code; loading; a bucket status changing under memtx
-- MVCC), an entry not there or not granted (yet).
local WRITE_NOT_RUN = {
    [storage.WRITE_REFUSED] = true,
    [1006] = true,
    [box.error.READONLY] = true,
    [box.error.LOADING] = true,
    [box.error.TRANSACTION_CONFLICT] = true,
    [box.error.NO_SUCH_PROC] = true,
    [box.error.NO_SUCH_FUNCTION] = true,
    [box.error.ACCESS_DENIED] = true,
}

-- new_dialog through the storages' native write entry (storage.WRITE_FUNCTION),
-- called directly on the master of the bucket's replica set with the client's
-- arguments (`args`: undecoded where the router takes them so): the new id, or
-- nil when nothing was written and the caller may take the ordinary way, which
-- retries and refreshes where the bucket is (the entry refused, vshard found no
-- master to send to). After a failure that may have come after the write (a
-- timeout, a lost connection) only a call with a request_id is tried again (the
-- storage then answers with the first try's id); any other gets the retryable
-- 1009, as on the ordinary way. The entry's own errors are raised as they came.
local function write_direct(bucket_id, args)
    local replicaset = state.route(bucket_id)
    if replicaset == nil then
        return nil
    end
    local id, err = replicaset:callrw(storage.WRITE_FUNCTION, {bucket_id, args},
        {timeout = state.call_timeout})
    if err == nil and id ~= nil then
        -- Where a C function's results travel wrapped (state.wrap_id): {id}.
        return state.wrap_id and type(id) == 'table' and id[1] or id
    end
    if type(err) == 'table' and (err.type == 'ShardingError' or WRITE_NOT_RUN[err.code]) then
        return nil
    end
    if type(err) ~= 'table' or err.code == nil or UNAVAILABLE_TYPES[err.type]
            or UNAVAILABLE_BOX[err.code] or err.code == box.error.PROC_LUA then
        if is_object(args) then
            args = args:decode()
        end
        if type(args[5]) == 'table' and args[5].request_id ~= nil then
            return nil
        end
        M.raise_routed_error('new_dialog', err)
    end
    raise(err.code, err.message)
end

-- The functions clients call.
-- new_dialog's reply (an id) is small: decoding it costs less than the msgpack
-- objects of return_raw, so only its arguments travel undecoded. It goes to the
-- storages' write entry first; the ordinary way gets what is left of the call's
-- time (DIALOGS_ROUTER_TIMEOUT covers both).
function M.new_dialog(...)
    -- One msgpack object where the router takes the arguments undecoded.
    local args = state.raw and (...) or {...}
    local bucket_id = box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, 'new_dialog', args})
    if state.cluster_count ~= state.bucket_count then
        check_count('new_dialog', state.call_timeout)
    end
    check_master('new_dialog', state.callrw, bucket_id)
    local deadline = fiber.clock() + state.call_timeout
    local id = write_direct(bucket_id, args)
    if id == nil then
        id = routed('new_dialog', state.callrw, args, bucket_id, time_left(deadline))
    end
    if state.wrap_id then
        return {id}
    end
    return id
end

function M.get_dialog(...)
    if state.raw then
        return get_dialog_routed(..., true)
    end
    return get_dialog_routed({...}, false)
end

-- list_dialogs: one call to the storage of the user's bucket, on its master
-- (a user's own mark_read, or the delivery of their own message, is visible to
-- their next list), through the native entry storage.INBOX_FUNCTIONS.list; the
-- ordinary way when it did not answer. The reply (a map) is passed on as the
-- storage encoded it where the arguments came undecoded.
local function list_dialogs_routed(call_args, raw)
    local bucket_id = box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, 'list_dialogs',
        call_args})
    if state.cluster_count ~= state.bucket_count then
        check_count('list_dialogs', state.call_timeout)
    end
    local deadline = fiber.clock() + state.call_timeout
    local reply = read_direct(storage.INBOX_FUNCTIONS.list, 'callrw', bucket_id, call_args, raw)
    if reply == nil then
        reply = routed('list_dialogs', state.callrw, call_args, bucket_id, time_left(deadline))
    end
    if state.wrap_id then
        return {reply}
    end
    return reply
end

function M.list_dialogs(...)
    if state.raw then
        return list_dialogs_routed(..., true)
    end
    return list_dialogs_routed({...}, false)
end

-- mark_read's rounds at most (each a count on the dialog's storage and an
-- attempt on the user's), and its error when the dialog kept changing between
-- the two (README, "Errors"; retryable).
M.MARK_READ_ROUNDS = 5
M.RETRY = 1014

-- One step of mark_read (`step`: 'read_count' or 'mark_read_apply') on the
-- master of `bucket_id`'s replica set: through the storages' native entry,
-- else (it refused, or did not answer: both steps may be repeated) the
-- ordinary way, which also raises the entry's own errors (1013). Its one value.
local function mark_read_step(step, bucket_id, args, deadline)
    local replicaset = state.route(bucket_id)
    if replicaset ~= nil then
        local result, err = replicaset:callrw(storage.INBOX_FUNCTIONS[step], {bucket_id, args},
            {timeout = time_left(deadline)})
        if err == nil and type(result) == 'table' then
            if state.wrap_id then
                result = result[1]
            end
            return result
        end
    end
    return routed('mark_read', state.callrw, args, bucket_id, time_left(deadline),
        storage.FUNCTIONS[step])
end

-- mark_read: (1) the dialog's storage validates up_to_id and counts the user's
-- unread messages after it, up to L (nil: all), with H, the last of the user's
-- messages there; (2) the user's storage moves the cursor with that count if
-- its entry's last message is H, else answers the L to count again with
-- (docs/sharding.md, "The inbox across replica sets").
local function mark_read_routed(call_args)
    local buckets = box.func[M.ROUTE_FUNCTION]:call({state.bucket_count, 'mark_read',
        call_args})
    if state.cluster_count ~= state.bucket_count then
        check_count('mark_read', state.call_timeout)
    end
    local args = is_object(call_args) and call_args:decode() or call_args
    local user, dialog, up_to = args[1], args[2], args[3]
    local deadline = fiber.clock() + state.call_timeout
    local limit = box.NULL
    for _ = 1, M.MARK_READ_ROUNDS do
        local counted = mark_read_step('read_count', buckets[1], {user, dialog, up_to, limit},
            deadline)
        local done = mark_read_step('mark_read_apply', buckets[2],
            {user, dialog, up_to, counted[1], counted[2]}, deadline)
        if done[1] ~= nil then
            if state.wrap_id then
                return {done[1]}
            end
            return done[1]
        end
        limit = done[2]
    end
    raise(M.RETRY, 'mark_read: the dialog kept changing; retry')
end

function M.mark_read(...)
    if state.raw then
        return mark_read_routed(...)
    end
    return mark_read_routed({...})
end

-- The functions clients call on a router, by name (config.PROCEDURES).
M.CLIENT_FUNCTIONS = {
    new_dialog = M.new_dialog,
    get_dialog = M.get_dialog,
    list_dialogs = M.list_dialogs,
    mark_read = M.mark_read,
}

-- What the call path runs with (vshard's router functions, the bucket counts,
-- the reply shape), set by dialogs.router before clients are served.
M.state = state

return M

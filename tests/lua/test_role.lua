-- dialogs (the Tarantool 3 role): roles_cfg.dialogs read by the same parsers as
-- the environment, refusals naming roles_cfg.dialogs.<key>, and the checks of
-- the credentials section against the role's settings. No server needed: the
-- cluster configuration is a table here.

local fio = require('fio')

local check = require('check')
local config = require('dialogs.config')
local role = require('dialogs')

-- Runs fn(base, lib) with base/target/dialogs holding empty procedure files (a
-- checkout after `make build`, as far as the settings can tell), removed after.
local function with_checkout(fn, opts)
    opts = opts or {}
    local base = fio.tempdir()
    local lib = fio.pathjoin(base, opts.lib_subdir or fio.pathjoin('target', 'dialogs'))
    fio.mktree(lib)
    for _, p in ipairs(config.library_names()) do
        local f = fio.open(fio.pathjoin(lib, p .. '.so'), {'O_CREAT', 'O_WRONLY'},
            tonumber('644', 8))
        f:close()
    end
    local cpath = package.cpath
    local ok, err = pcall(fn, base, lib)
    package.cpath = cpath
    fio.rmtree(base)
    if not ok then
        error(err, 0)
    end
end

local function refuses(cfg, message)
    with_checkout(function(base)
        check.raises(message, role.settings, cfg, base)
    end)
end

-- A cluster configuration as config:get would answer it, from a table of
-- dotted paths to values.
local function getter(t)
    return function(path)
        return t[path]
    end
end

local SECRET = 'pw-of-the-app-user'

local function users(app)
    return {dialogs = app, replicator = {password = 'x', roles = {'replication'}}}
end

-- What the refusals say the application user may do.
local MAY = 'may only execute new_dialog, get_dialog, list_dialogs and mark_read'

local function good_app_user()
    return {password = SECRET, privileges = {
        {permissions = {'execute'},
         functions = {'new_dialog', 'get_dialog', 'list_dialogs', 'mark_read'}},
    }}
end

local LOOPBACK = {{uri = '127.0.0.1:3301'}}

local function cluster_refuses(app, listen, message)
    local s = {user = 'dialogs'}
    local ok, err = pcall(role.check_cluster_config, s, getter({
        ['credentials.users'] = users(app), ['iproto.listen'] = listen or LOOPBACK}))
    assert(not ok, 'accepted: ' .. require('json').encode(app))
    check.equal(tostring(err), message, 'refusal')
    assert(not tostring(err):find(SECRET, 1, true), 'the message shows the password')
end

return {
    {'defaults: no roles_cfg at all, or an empty one', function()
        with_checkout(function(base, lib)
            for _, cfg in ipairs({box.NULL, {}}) do
                check.equal(role.settings(cfg, base), {user = 'dialogs', synchronous = false,
                    request_ttl = 7 * 24 * 3600, lib_dir = lib, guest = 'none'}, 'settings')
            end
        end)
    end},

    {'every key set, typed as YAML gives it', function()
        with_checkout(function(base, lib)
            local s = role.settings({user = 'chat', synchronous = true, request_ttl = 60,
                lib_dir = lib, guest = 'execute'}, base)
            check.equal(s, {user = 'chat', synchronous = true, request_ttl = 60,
                lib_dir = lib, guest = 'execute'}, 'settings')
        end, {lib_subdir = 'elsewhere'})
    end},

    {'strings as an environment gives them', function()
        with_checkout(function(base)
            local s = role.settings({synchronous = 'false', request_ttl = '2.5'}, base)
            check.equal({s.synchronous, s.request_ttl}, {false, 2.5}, 'settings')
        end)
    end},

    {'bad values are refused naming roles_cfg.dialogs.<key>', function()
        refuses('yes', 'dialogs: roles_cfg.dialogs: expected a map of settings (guest, '
            .. 'lib_dir, request_ttl, synchronous, user), got string')
        refuses({usr = 'x'}, 'dialogs: roles_cfg.dialogs.usr: unknown setting (known: '
            .. 'guest, lib_dir, request_ttl, synchronous, user)')
        for _, g in ipairs({'yes', true, 'read', 'EXECUTE'}) do
            refuses({guest = g}, string.format('dialogs: roles_cfg.dialogs.guest: expected '
                .. 'one of none, execute, got %q', tostring(g)))
        end
        refuses({user = 'admin'}, 'dialogs: roles_cfg.dialogs.user: expected a user name of '
            .. 'letters, digits and _ (not guest or admin), got "admin"')
        refuses({user = 5}, 'dialogs: roles_cfg.dialogs.user: expected a user name of '
            .. 'letters, digits and _ (not guest or admin), got "5"')
        refuses({synchronous = 'yes'},
            'dialogs: roles_cfg.dialogs.synchronous: expected true or false, got "yes"')
        refuses({request_ttl = 0}, 'dialogs: roles_cfg.dialogs.request_ttl: expected a '
            .. 'positive number of seconds, got "0"')
        refuses({request_ttl = 'week'}, 'dialogs: roles_cfg.dialogs.request_ttl: expected a '
            .. 'positive number of seconds, got "week"')
        refuses({lib_dir = '/nonexistent/dialogs-lib'}, 'dialogs: roles_cfg.dialogs.lib_dir: '
            .. '/nonexistent/dialogs-lib/new_dialog.so not found (run `make build`)')
    end},

    {'without a checkout build the library is looked up on package.cpath', function()
        with_checkout(function(base, lib)
            package.cpath = fio.pathjoin(lib, '?.so') .. ';' .. package.cpath
            check.equal(role.settings({}, base).lib_dir, nil, 'lib_dir (found on cpath)')
        end, {lib_subdir = 'rocks/lib'})
    end},

    {'no library anywhere is refused naming lib_dir', function()
        with_checkout(function(base)
            package.cpath = '/nonexistent/?.so'
            check.raises(string.format('dialogs: roles_cfg.dialogs.lib_dir: new_dialog.so is '
                .. 'neither in %s nor on package.cpath (run `make build`, install the rock, '
                .. 'or set roles_cfg.dialogs.lib_dir)', fio.pathjoin(base, 'target', 'dialogs')),
                role.settings, {}, base)
        end, {lib_subdir = 'not-on-any-path'})
    end},

    {'the shipped credentials fit', function()
        role.check_cluster_config({user = 'dialogs'}, getter({
            ['credentials.users'] = users(good_app_user()), ['iproto.listen'] = LOOPBACK}))
        -- two entries, two procedures each; no password on loopback (nobody can log
        -- in as the user then, but nothing is exposed)
        role.check_cluster_config({user = 'dialogs'}, getter({
            ['credentials.users'] = users({privileges = {
                {permissions = {'execute'}, functions = {'get_dialog', 'list_dialogs'}},
                {permissions = {'execute'}, functions = {'new_dialog', 'mark_read'},
                 universe = false},
            }}),
            ['iproto.listen'] = {{uri = 'unix/:/tmp/dialogs.sock'}}}))
    end},

    {'an application user that is not declared is refused', function()
        local ok, err = pcall(role.check_cluster_config, {user = 'chat'},
            getter({['credentials.users'] = users(good_app_user())}))
        assert(not ok)
        check.equal(tostring(err), 'dialogs: roles_cfg.dialogs.user: user "chat" is not '
            .. 'declared under credentials.users (declare it there with execute on '
            .. 'new_dialog, get_dialog, list_dialogs and mark_read)', 'refusal')
    end},

    {'privileges beyond executing the procedures are refused', function()
        local function with_privileges(p)
            local u = good_app_user()
            u.privileges = p
            return u
        end
        cluster_refuses(with_privileges({{permissions = {'execute', 'read'},
            functions = {'new_dialog', 'get_dialog'}}}), nil,
            'dialogs: credentials.users.dialogs.privileges[1].permissions: the application '
            .. 'user ' .. MAY .. ', not read')
        cluster_refuses(with_privileges({{permissions = {'execute'},
            functions = {'new_dialog', 'get_dialog', 'dostring'}}}), nil,
            'dialogs: credentials.users.dialogs.privileges[1].functions: the application '
            .. 'user ' .. MAY .. ', not dostring')
        cluster_refuses(with_privileges({{permissions = {'execute'},
            functions = {'new_dialog', 'get_dialog'}}, {permissions = {'execute'},
            universe = true}}), nil,
            'dialogs: credentials.users.dialogs.privileges[2].universe: the application '
            .. 'user ' .. MAY .. '; this grants more')
        cluster_refuses(with_privileges({{permissions = {'execute'},
            functions = {'new_dialog', 'get_dialog'}, lua_eval = true}}), nil,
            'dialogs: credentials.users.dialogs.privileges[1].lua_eval: the application '
            .. 'user ' .. MAY .. '; this grants more')
        local u = good_app_user()
        u.roles = {'super'}
        cluster_refuses(u, nil, 'dialogs: credentials.users.dialogs.roles: the application '
            .. 'user takes no roles: it ' .. MAY)
    end},

    {'a procedure the user may not execute is refused', function()
        cluster_refuses({password = SECRET, privileges = {{permissions = {'execute'},
            functions = {'new_dialog'}}}}, nil, 'dialogs: credentials.users.dialogs.privileges: '
            .. 'no execute on get_dialog: the application user could not call it')
    end},

    {'credentials that give guest anything are refused', function()
        local hint = 'what guest may do is roles_cfg.dialogs.guest (execute: call new_dialog '
            .. 'and get_dialog, and nothing else)'
        local function guest_refused(guest, message)
            local u = users(good_app_user())
            u.guest = guest
            local ok, err = pcall(role.check_cluster_config, {user = 'dialogs'}, getter({
                ['credentials.users'] = u, ['iproto.listen'] = LOOPBACK}))
            assert(not ok, 'accepted: ' .. require('json').encode(guest))
            check.equal(tostring(err), message, 'refusal')
        end
        -- The report's grant, as a configuration would write it.
        guest_refused({privileges = {{permissions = {'read', 'write', 'execute'},
            universe = true}}}, 'dialogs: credentials.users.guest.privileges: guest takes no '
            .. 'privileges here: ' .. hint)
        guest_refused({privileges = {{permissions = {'execute'},
            functions = {'new_dialog', 'get_dialog'}}}}, 'dialogs: '
            .. 'credentials.users.guest.privileges: guest takes no privileges here: ' .. hint)
        guest_refused({roles = {'public', 'super'}}, 'dialogs: credentials.users.guest.roles: '
            .. 'guest takes no role but public here (got super): ' .. hint)
        -- Declared with nothing (or Tarantool's own public role) is fine.
        for _, guest in ipairs({{}, {privileges = {}}, {roles = {'public'}}}) do
            local u = users(good_app_user())
            u.guest = guest
            role.check_cluster_config({user = 'dialogs'}, getter({
                ['credentials.users'] = u, ['iproto.listen'] = LOOPBACK}))
        end
    end},

    {'beyond loopback the password is required and not the development one', function()
        local open = {{uri = '127.0.0.1:3301'}, {uri = '0.0.0.0:3302'}}
        local u = good_app_user()
        u.password = nil
        cluster_refuses(u, open, 'dialogs: credentials.users.dialogs.password: must be set '
            .. 'when iproto.listen (0.0.0.0:3302) is not a loopback address')
        u.password = config.DEV_PASSWORD
        cluster_refuses(u, open, 'dialogs: credentials.users.dialogs.password: the '
            .. 'development password is refused when iproto.listen (0.0.0.0:3302) is not a '
            .. 'loopback address')
        role.check_cluster_config({user = 'dialogs'}, getter({
            ['credentials.users'] = users(good_app_user()), ['iproto.listen'] = open}))
    end},
}

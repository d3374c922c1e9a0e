-- The dialogs store as a rock: the native procedures (built with cargo), the Lua
-- modules init.lua and the Tarantool 3 role use, and the role itself.
--
--   luarocks make                       (Debian's luarocks: into its tree)
--   luarocks make --tree DIR            (a tree of your own; then
--                                        eval "$(luarocks path --tree DIR)")
--   tt rocks make                       (the application's .rocks/, found by
--                                        Tarantool without any path)
--
-- The library lands in the tree's lib directory as new_dialog.so,
-- get_dialog.so and one file per other procedure, where box.schema.func.create looks the C functions up
-- (package.cpath, or .rocks/lib/tarantool); the modules in its Lua directory,
-- with the role as the module `dialogs`. docs/operations.md, "Install".
rockspec_format = '3.0'
package = 'dialogs'
version = 'scm-1'
source = {
    -- Built from the checkout `luarocks make` runs in.
    url = 'git+file://.',
}
description = {
    summary = 'Direct-message storage inside Tarantool, with native procedures',
    detailed = [[
Messages in a memtx space; new_dialog and get_dialog are setuid C functions
written in Rust. Runs from init.lua on Tarantool 2.x and as the `dialogs` role
of a Tarantool 3 configuration.]],
    license = 'BSD-2-Clause',
}
dependencies = {
    'lua >= 5.1',
}
build = {
    type = 'command',
    -- One library, installed under each procedure's name (Tarantool looks the C
    -- function `f` up as the symbol f in f.so).
    build_command = [[
cargo build --release -p dialogs &&
mkdir -p target/rock &&
cp target/release/libdialogs.so target/rock/new_dialog.so &&
cp target/release/libdialogs.so target/rock/get_dialog.so &&
cp target/release/libdialogs.so target/rock/list_dialogs.so &&
cp target/release/libdialogs.so target/rock/mark_read.so &&
cp target/release/libdialogs.so target/rock/dialogs_route.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_get.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_new.so &&
cp target/release/libdialogs.so target/rock/dialogs_inbox_build.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_list.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_inbox_apply.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_inbox_apply_many.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_read_count.so &&
cp target/release/libdialogs.so target/rock/dialogs_storage_mark_read_apply.so &&
cp target/release/libdialogs.so target/rock/dialogs_stats.so &&
cp target/release/libdialogs.so target/rock/dialogs_slow_calls.so
]],
    -- Every module under dialogs/ (the role is dialogs/init.lua), whatever
    -- modules the store grows, and the libraries (dialogs_route.so: the check a
    -- vshard router runs; dialogs_stats.so, dialogs_slow_calls.so: the counters
    -- and the slow-call threshold, docs/metrics.md).
    install_command = [[
mkdir -p "$(LUADIR)/dialogs" "$(LIBDIR)" &&
cp dialogs/*.lua "$(LUADIR)/dialogs/" &&
cp target/rock/new_dialog.so target/rock/get_dialog.so target/rock/list_dialogs.so target/rock/mark_read.so target/rock/dialogs_route.so target/rock/dialogs_storage_get.so target/rock/dialogs_storage_new.so target/rock/dialogs_inbox_build.so target/rock/dialogs_storage_list.so target/rock/dialogs_storage_inbox_apply.so target/rock/dialogs_storage_inbox_apply_many.so target/rock/dialogs_storage_read_count.so target/rock/dialogs_storage_mark_read_apply.so target/rock/dialogs_stats.so target/rock/dialogs_slow_calls.so "$(LIBDIR)/"
]],
}

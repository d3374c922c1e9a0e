#!/usr/bin/env bash
# install-lib.sh SO DIR NAME...
# Puts the built module SO into DIR as libdialogs.so and links NAME.so to it for each
# procedure NAME (Tarantool looks a C function `f` up as symbol f in f.so). The copy
# is renamed into place, so a running server that mapped the old file keeps it intact
# and box.schema.func.reload picks the new one.
set -euo pipefail
so=$1 dir=$2
shift 2
mkdir -p "$dir"
tmp=$(mktemp "$dir/.libdialogs.XXXXXX.so")
trap 'rm -f "$tmp"' EXIT
cp "$so" "$tmp"
chmod 755 "$tmp"
# A server that reloads a file it cannot load dies, so every procedure symbol is
# loaded once in a throwaway Tarantool ($TARANTOOL, else `tarantool` from PATH: the
# server that will load it) before the file takes the installed name.
check=$(mktemp)
trap 'rm -f "$tmp" "$check"' EXIT
cat > "$check" <<'LUA'
local path = arg[1]
for i = 2, #arg do
    local f, err = package.loadlib(path, arg[i])
    if f == nil then
        io.stderr:write(string.format('install-lib: %s: %s\n', arg[i], tostring(err)))
        os.exit(1)
    end
end
os.exit(0)
LUA
if ! "${TARANTOOL:-tarantool}" "$check" "$tmp" "$@" </dev/null; then
  echo "install-lib: $so does not load; $dir/libdialogs.so left as it was" >&2
  exit 1
fi
mv -f "$tmp" "$dir/libdialogs.so"
for name in "$@"; do
  ln -sfn libdialogs.so "$dir/$name.so"
done

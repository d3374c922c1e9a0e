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
tmp=$(mktemp "$dir/.libdialogs.XXXXXX")
cp "$so" "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$dir/libdialogs.so"
for name in "$@"; do
  ln -sfn libdialogs.so "$dir/$name.so"
done

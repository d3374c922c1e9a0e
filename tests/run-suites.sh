#!/usr/bin/env bash
# tests/run-suites.sh SUITE...   (what `make test` runs; SUITE is a make target)
#
# Runs every suite to its end, even after one has failed, keeping each one's output
# in target/test-logs/SUITE.log as well as on the terminal. Then it adds up the
# counts that the runners printed themselves (libtest's `test result:` lines,
# pytest's summary, the Lua runner's `lua:` line, the benchmark's `bench:` line):
# one line per suite, the server that was tested, and last, alone on its line,
#
#   N passed, N failed, N skipped
#
# A suite that exits non-zero without reporting a failed test (a build error, a
# crash before its summary) counts as one failed test, so the closing line never
# says 0 failed for a red run. Exits 1 when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

make=${MAKE:-make}
logs=target/test-logs
mkdir -p "$logs"

# counts SUITE LOG -> "passed failed skipped" as that suite's runner reported them,
# or nothing when the log holds no summary.
counts() {
  local suite=$1 log=$2
  case $suite in
    test-lua)
      # tests/lua/run.lua: `lua: N passed, N failed`
      awk '/^lua: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; n++ }
           END { if (n) print p, f, 0 }' "$log" ;;
    test-net)
      # pytest's closing line, e.g. `3 failed, 610 passed, 4 skipped, 1 error in 80.1s`
      # (with or without the ===== frame). An error (a fixture that broke) and an
      # unexpected pass of an expected failure count as failed, an expected failure
      # as skipped (it checked nothing that passed).
      awk '/^(=+ )?[0-9]+ [a-z]+(, [0-9]+ [a-z]+)* in [0-9.]+s( \([0-9:]+\))?( =+)?$/ {
             p = f = s = 0
             line = $0; gsub(/=/, "", line); sub(/ in [0-9.]+s.*$/, "", line)
             n = split(line, parts, ", ")
             for (i = 1; i <= n; i++) {
               split(parts[i], kv, " ")
               if (kv[2] == "passed") p += kv[1]
               else if (kv[2] == "failed" || kv[2] ~ /^errors?$/ || kv[2] == "xpassed") f += kv[1]
               else if (kv[2] == "skipped" || kv[2] == "xfailed") s += kv[1]
             }
             found = 1
           }
           END { if (found) print p, f, s }' "$log" ;;
    lint-lua)
      # luacheck over every Lua file: the Makefile's `luacheck: N Lua files clean`,
      # or, when it found something, one failure per file it complained about.
      awk '/^luacheck: [0-9]+ Lua files clean$/ { p = $2; ok = 1 }
           /^[^ :]+:[0-9]+:[0-9]+: / { split($0, a, ":"); bad[a[1]] = 1 }
           END { f = 0; for (k in bad) f++; if (ok || f) print p + 0, f, 0 }' "$log" ;;
    bench-smoke)
      # dialogs-bench: `bench: N passed, N failed` (a cell passes with 0 errors)
      awk '/^bench: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; n++ }
           END { if (n) print p, f, 0 }' "$log" ;;
    *)
      # libtest (cargo test, tarantool-test):
      # `test result: ok. N passed; N failed; N ignored; N measured; N filtered out; ...`
      awk '/^test result: / {
             for (i = 1; i <= NF; i++) {
               if ($(i + 1) ~ /^passed;?$/) p += $i
               if ($(i + 1) ~ /^failed;?$/) f += $i
               if ($(i + 1) ~ /^ignored;?$/) s += $i
             }
             n++
           }
           END { if (n) print p + 0, f + 0, s + 0 }' "$log" ;;
  esac
}

# `tests/run-suites.sh --count SUITE LOG`: only the counts of one saved log.
if [ "${1:-}" = --count ]; then
  counts "$2" "$3"
  exit
fi

# The server under test: the Makefile exports TARANTOOL (an absolute path).
tarantool=${TARANTOOL:-$(command -v tarantool)}
server="$tarantool ($("$tarantool" --version 2>/dev/null | head -n 1))"
echo "make test: every suite against $server"

total_p=0 total_f=0 total_s=0
lines=()
for suite in "$@"; do
  log=$logs/$suite.log
  echo "=== $suite"
  "$make" --no-print-directory "$suite" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  reported=$(counts "$suite" "$log")
  read -r p f s <<<"$reported"
  p=${p:-0} f=${f:-0} s=${s:-0}
  note=""
  if [ -z "$reported" ]; then
    # Nothing to show that anything was checked: that is a failure too.
    f=$((f + 1))
    note=" (reported no counts, exit status $rc: see $log)"
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    note=" (exit status $rc without a failed test: see $log)"
  fi
  lines+=("$suite: $p passed, $f failed, $s skipped$note")
  total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
done

echo
echo "make test summary (server: $server)"
printf '  %s\n' "${lines[@]}"
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]

#!/usr/bin/env bash
# tests/run-suites.sh SUITE...   (what `make test` runs; SUITE is a make target)
#
# Runs every suite to its end, even after one has failed, keeping each one's output
# in target/test-logs/SUITE.log as well as on the terminal. Then it adds up the
# counts that the runners printed themselves (libtest's `test result:` lines,
# pytest's summary, the Lua runner's `lua:` line): one line per test suite, the
# server that was tested, the checks on a line of their own, and last, alone on its
# line, the sum over the test suites only,
#
#   N passed, N failed, N skipped
#
# Checks are not tests: luacheck's files (lint-lua), the references the docs and
# comments make (check-refs) and the benchmark's smoke cells (bench-smoke) are
# reported on the `checks:` line, e.g.
#
#   checks: luacheck 29 files clean; references 812 resolved; bench-smoke 38 cells ok
#
# and a failed check is named on a `FAILED checks:` line and fails the run.
# A suite that exits non-zero without reporting a failed test or a failed check
# (a build error, a crash before its summary) counts as one failure, so the run is
# never green when one is red. Exits 1 when anything failed.
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
      # A check: luacheck over every Lua file, the Makefile's `luacheck: N Lua files
      # clean`, or, when it found something, the files it complained about.
      awk '/^luacheck: [0-9]+ Lua files clean$/ { p = $2; ok = 1 }
           /^[^ :]+:[0-9]+:[0-9]+: / { split($0, a, ":"); bad[a[1]] = 1 }
           END { f = 0; for (k in bad) f++; if (ok || f) print p + 0, f }' "$log" ;;
    check-refs)
      # A check: scripts/check-refs' `links: N resolved, N broken` (remark, Markdown
      # links) and scripts/check-refs' `check-refs: N file references resolved`
      # or `check-refs: N of M file references unresolved`; both must be there.
      awk '/^links: [0-9]+ resolved, [0-9]+ broken$/ { p += $2; f += $4; n++ }
           /^check-refs: [0-9]+ file references resolved$/ { p += $2; n++ }
           /^check-refs: [0-9]+ of [0-9]+ file references unresolved$/ {
             p += $4 - $2; f += $2; n++ }
           END { if (n == 2) print p, f }' "$log" ;;
    bench-smoke)
      # A check: dialogs-bench's `bench: N passed, N failed` (a cell passes with 0
      # errors).
      awk '/^bench: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; n++ }
           END { if (n) print p, f }' "$log" ;;
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

# Whether SUITE is a check (reported on the `checks:` line, never in the tests'
# total), and how its line names what it counted.
check_label() {
  case $1 in
    lint-lua) echo "luacheck|files clean|files with findings" ;;
    check-refs) echo "references|resolved|unresolved" ;;
    bench-smoke) echo "bench-smoke|cells ok|cells failed" ;;
    *) return 1 ;;
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
lines=() checks=() failed_checks=()
for suite in "$@"; do
  log=$logs/$suite.log
  echo "=== $suite"
  "$make" --no-print-directory "$suite" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  reported=$(counts "$suite" "$log")
  if label=$(check_label "$suite"); then
    IFS='|' read -r name ok_word bad_word <<<"$label"
    read -r ok bad <<<"$reported"
    ok=${ok:-0} bad=${bad:-0}
    if [ -z "$reported" ]; then
      checks+=("$name reported no count (exit status $rc: see $log)")
      failed_checks+=("$suite")
    elif [ "$bad" -gt 0 ] || [ "$rc" -ne 0 ]; then
      checks+=("$name $ok $ok_word, $bad $bad_word (exit status $rc: see $log)")
      failed_checks+=("$suite")
    else
      checks+=("$name $ok $ok_word")
    fi
    continue
  fi
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
if [ ${#lines[@]} -gt 0 ]; then
  printf '  %s\n' "${lines[@]}"
fi
if [ ${#checks[@]} -gt 0 ]; then
  joined=$(printf '%s; ' "${checks[@]}")
  echo "checks: ${joined%; }"
fi
if [ ${#failed_checks[@]} -gt 0 ]; then
  echo "FAILED checks: ${failed_checks[*]}"
fi
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ] && [ ${#failed_checks[@]} -eq 0 ]

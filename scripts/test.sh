#!/usr/bin/env bash
# Runs every test suite and prints one closing line "N passed, N failed".
#   FAST=1  plain build only (no valgrind, no ASan, no fuzzing)
# Full run: unit tests (plain, under valgrind, ASan/UBSan), end-to-end tests against the
# ASan/UBSan binary and against the plain binary under valgrind, then every libFuzzer harness for
# FUZZ_SECONDS (default 8) from its committed corpus (fuzz/build.sh ci: one test per harness).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BUILD_ASAN=${BUILD_ASAN:-build-asan}
PY=/usr/bin/python3
passed=0
failed=0
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# Counts cmocka's TAP lines (one per test case) from meson's log; a test binary that failed
# as a whole (crash, leak report, timeout) adds one failure more.
count_meson() {
  local log=$1 tlog ok nok fail to
  tlog=$(sed -n 's/^Full log written to //p' "$log" | tail -1)
  ok=$(grep -cE '^ok [0-9]+' "$tlog" 2>/dev/null)
  nok=$(grep -cE '^not ok [0-9]+' "$tlog" 2>/dev/null)
  fail=$(grep -E '^Fail:' "$log" | awk '{print $2}' | tail -1)
  to=$(grep -E '^Timeout:' "$log" | awk '{print $2}' | tail -1)
  if [ -z "$fail" ] || [ -z "$tlog" ]; then fail=$(( ${fail:-0} + 1 )); fi
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${nok:-0} + fail + ${to:-0}))
}

run_unit() { # $1 label, $2 build dir, rest: extra meson test args
  local label=$1 dir=$2; shift 2
  echo "== unit tests ($label)"
  meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$logdir/unit-$label.log" | tail -15
  count_meson "$logdir/unit-$label.log"
}

run_e2e() { # $1 label, $2 binary, $3 optional command prefix for the server (CHATKITD_WRAP),
            # $4 optional pytest marker expression
  local label=$1 bin=$2 wrap=${3:-} marks=()
  [ -n "${4:-}" ] && marks=(-m "$4")
  echo "== end-to-end tests ($label)"
  CHATKITD_WRAP="$wrap" CHATKITD_BIN="$bin" $PY -m pytest tests/e2e -q -p no:cacheprovider "${marks[@]}" \
    --junitxml="$logdir/e2e-$label.xml" 2>&1 | tail -25
  if [ -f "$logdir/e2e-$label.xml" ]; then
    read -r p f < <($PY - "$logdir/e2e-$label.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f + sk)  # a skipped test counts as failed: nothing may be skipped silently
PYEOF
)
    passed=$((passed + p)); failed=$((failed + f))
  else
    failed=$((failed + 1))
  fi
}

# fuzz/build.sh ci prints "fuzz HARNESS: ok (...)" or "fuzz HARNESS: FAIL (...)" per harness;
# a run that failed without naming a harness adds one failure
run_fuzz() {
  local rc ok nok
  echo "== fuzzing (each harness ${FUZZ_SECONDS:-8} s from fuzz/corpus/)"
  fuzz/build.sh ci "${FUZZ_SECONDS:-8}" 2>&1 | tee "$logdir/fuzz.log"
  rc=${PIPESTATUS[0]}
  ok=$(grep -cE '^fuzz [a-z]+: ok' "$logdir/fuzz.log")
  nok=$(grep -cE '^fuzz [a-z]+: FAIL' "$logdir/fuzz.log")
  if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then nok=1; fi
  passed=$((passed + ok)); failed=$((failed + nok))
}

run_unit plain "$BUILD"
if [ -z "${FAST:-}" ]; then
  # (--child-silent-after-fork: a forked MCP child whose exec failed holds a copy of our heap)
  run_unit valgrind "$BUILD" --wrap='valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect -q --child-silent-after-fork=yes' --timeout-multiplier=4
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_unit asan "$BUILD_ASAN"
  # memory budgets (tests marked budget) hold for the plain build: sanitizers and valgrind
  # change what memory costs, so those runs leave them out and a stage of their own runs them
  run_e2e asan "$PWD/$BUILD_ASAN/chatkitd" "" "not budget"
  # the real server under valgrind: any memory error or leak fails the test that saw it
  run_e2e valgrind "$PWD/$BUILD/chatkitd" \
    "valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible --child-silent-after-fork=yes" \
    "not budget"
  run_e2e budgets "$PWD/$BUILD/chatkitd" "" "budget"
  run_fuzz
else
  run_e2e plain "$PWD/$BUILD/chatkitd"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The test suite, one pytest process per test file (plus one for the doctests).
#
# Why: after a few hundred XLA compiles in one process, XLA's CPU compiler has crashed
# (segfault inside backend_compile) on this machine with jaxlib 0.10.2; every file passes on its
# own. Separate processes keep each one small. Extra arguments go to every pytest call
# (e.g. `bash tests/run_all.sh -m slow`). Exit status: non-zero if any file failed or no test ran.
set -u
cd "$(dirname "$0")/.."
passed=0; failed=0; skipped=0; bad_files=()
for target in collapse_jax tests/test_*.py; do
  out=$(python -m pytest -q -p no:cacheprovider "$@" "$target" 2>&1)
  code=$?
  last=$(printf '%s\n' "$out" | grep -E '(passed|failed|error|no tests ran|deselected)' | tail -n 1)
  echo "$target: ${last:-no summary}"
  p=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || true)
  f=0
  for x in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$last" | grep -oE '^[0-9]+'); do f=$((f + x)); done
  s=$(grep -oE '[0-9]+ skipped' <<<"$last" | grep -oE '[0-9]+' || true)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [[ $code -ne 0 && $code -ne 5 ]]; then
    bad_files+=("$target")
    printf '%s\n' "$out" | tail -n 60
    [[ ${f:-0} -eq 0 ]] && failed=$((failed + 1))  # a crash counts as a failure
  fi
done
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
if [[ ${#bad_files[@]} -gt 0 ]]; then
  echo "failing: ${bad_files[*]}" >&2
  exit 1
fi
[[ $passed -gt 0 ]] || { echo "no test ran" >&2; exit 1; }
exit 0

#!/usr/bin/env bash
# The test suite, one pytest process per test file (the docstring examples are
# tests/test_doctests.py), TEST_JOBS of them at a time (default 2, the cores CI has; TEST_JOBS=1
# runs them one after another).
#
# Why processes per file: XLA compiles a program on one thread, so two processes keep both cores
# busy. (A single process also works since compiled programs are released after each file; the
# crash it once had was the memory-map limit, see benchmarks/xla_memory_maps.py.) Extra arguments
# go to every pytest call (e.g. `bash tests/run_all.sh -m slow`). Exit status: non-zero if any
# file failed or no test ran.
set -u
cd "$(dirname "$0")/.."
jobs_max="${TEST_JOBS:-2}"
logs="$(mktemp -d)"
# the slowest files first (as measured in CI), so the last one to finish is a short one
slow=(tests/test_contract.py tests/test_validate.py tests/models/test_transformer_lm.py
      tests/models/test_gaussian_fast.py tests/test_sweep.py tests/test_cli.py tests/test_theory.py
      tests/test_doctests.py)
targets=("${slow[@]}")
shopt -s nullglob
for t in tests/test_*.py tests/*/test_*.py; do
  [[ " ${slow[*]} " == *" $t "* ]] || targets+=("$t")
done

# a line per file as it finishes: [finished/total, elapsed] file: pytest's summary (seconds)
n=${#targets[@]}
start=$SECONDS
echo "running ${n} test files, ${jobs_max} at a time (a line as each finishes)"
i=0
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n; done
  (
    t0=$SECONDS
    python -m pytest -q -p no:cacheprovider "$@" "$t" >"$logs/$i.out" 2>&1; echo $? >"$logs/$i.rc"
    last=$(grep -E '(passed|failed|error|no tests ran|deselected)' "$logs/$i.out" | tail -n 1)
    done_now=$(ls "$logs"/*.rc | wc -l)
    printf '[%d/%d, %dm%02ds] %s: %s (%d s)\n' "$done_now" "$n" $(((SECONDS - start) / 60)) \
      $(((SECONDS - start) % 60)) "$t" "${last:-no summary}" $((SECONDS - t0))
  ) &
  i=$((i + 1))
done
wait
echo

passed=0; failed=0; skipped=0; bad_files=()
for i in "${!targets[@]}"; do
  target="${targets[$i]}"; out=$(cat "$logs/$i.out"); code=$(cat "$logs/$i.rc" 2>/dev/null || echo 1)
  last=$(printf '%s\n' "$out" | grep -E '(passed|failed|error|no tests ran|deselected)' | tail -n 1)
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
rm -rf "$logs"
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
if [[ ${#bad_files[@]} -gt 0 ]]; then
  echo "failing: ${bad_files[*]}" >&2
  exit 1
fi
[[ $passed -gt 0 ]] || { echo "no test ran" >&2; exit 1; }
exit 0

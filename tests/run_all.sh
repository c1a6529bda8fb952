#!/usr/bin/env bash
# The test suite (the docstring examples are tests/test_doctests.py) in pytest processes of one
# slow file or a group of short ones, TEST_JOBS processes at a time (default 2, the cores CI has;
# TEST_JOBS=1 runs them one after another).
#
# Why several processes: XLA compiles a program on one thread, so two processes keep both cores
# busy. (One process per group works since compiled programs are released after each file; the
# crash a single process once had was the memory-map limit, see benchmarks/xla_memory_maps.py.)
# Extra arguments go to every pytest call (e.g. `bash tests/run_all.sh -m slow`). Exit status:
# non-zero if any file failed or no test ran.
set -u
cd "$(dirname "$0")/.."
jobs_max="${TEST_JOBS:-2}"
logs="$(mktemp -d)"
# one persistent compilation cache for every pytest process of this run (tests/conftest.py): a
# program compiled by one file is loaded, not compiled again, by the others
export COLLAPSE_JAX_TEST_CACHE="${COLLAPSE_JAX_TEST_CACHE:-$logs/xla}"
# One process per slow file, the slowest first (as measured in CI), so the last to finish is a
# short one; the other files share a process in groups of about two minutes (each process
# spends ~5 s importing; a file's compiled programs are released when it ends, see conftest).
# A file listed nowhere runs in its own process.
slow=(tests/test_contract.py tests/models/test_transformer_lm.py
      tests/test_cli.py tests/models/test_gaussian_fast.py tests/test_sweep.py
      tests/test_doctests.py tests/test_theory.py)
groups=("tests/test_validate.py tests/test_experiment.py"
        "tests/models/test_gaussian.py tests/test_regimes.py"
        "tests/models/test_vae.py tests/models/test_gmm.py"
        "tests/models/test_conformer_diffusion.py tests/test_store.py"
        "tests/test_programs.py tests/test_compiling.py tests/test_linalg.py tests/test_pool.py"
        "tests/test_examples.py tests/models/test_linear_regression.py tests/test_reproduce.py"
        "tests/test_fitting.py tests/models/test_kde.py tests/models/test_kde_fast.py"
        "tests/data/test_text.py tests/test_mesh.py tests/test_analyze.py tests/test_xla.py"
        "tests/test_checkpoint.py tests/test_metrics.py tests/test_rng.py tests/test_chain.py
         tests/data/test_toy2d.py tests/data/test_images.py tests/models/test_categorical.py
         tests/data/test_molecules.py tests/test_results.py tests/test_plan.py
         tests/test_tables.py tests/test_overrides.py tests/test_plots.py")
targets=("${slow[@]}")
listed=" ${slow[*]} "
shopt -s nullglob
for g in "${groups[@]}"; do
  present=()
  for t in $g; do [[ -f $t ]] && present+=("$t"); listed+=" $t "; done
  [[ ${#present[@]} -gt 0 ]] && targets+=("${present[*]}")
done
for t in tests/test_*.py tests/*/test_*.py; do
  [[ "$listed" == *" $t "* ]] || targets+=("$t")
done

# a line per process as it finishes: [finished/total, elapsed] files: pytest's summary (seconds)
n=${#targets[@]}
files=$(printf '%s\n' "${targets[@]}" | wc -w)
start=$SECONDS
echo "running ${files} test files in ${n} processes, ${jobs_max} at a time (a line as each ends)"
i=0
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n; done
  (
    t0=$SECONDS
    python -m pytest -q -p no:cacheprovider "$@" $t >"$logs/$i.out" 2>&1; echo $? >"$logs/$i.rc"
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

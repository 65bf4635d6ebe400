#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; preset "fuzz") and runs each from its
# seed corpus in fuzz/corpus/. By default every run is reproducible: a fixed seed and a fixed
# number of inputs (FUZZ_RUNS, default 100000), so the same commit gives the same verdict on
# every machine (this is what CI runs). FUZZ_SECONDS=N explores instead: N seconds per
# target from a random seed. A finding (crash, sanitizer report, an exception other than
# braid's own errors) fails the run and leaves the input in build/fuzz/findings/; turn it
# into a regression test. The seed corpus is read only: new inputs go to a scratch copy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${FUZZ_SECONDS:-}" ]]; then
  budget=(-max_total_time="$FUZZ_SECONDS")
  label="${FUZZ_SECONDS}s, random seed"
else
  budget=(-seed=1 -runs="${FUZZ_RUNS:-100000}")
  label="${FUZZ_RUNS:-100000} inputs, seed 1"
fi
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j "${JOBS:-$(nproc)}"
mkdir -p build/fuzz/findings
status=0
for target in safetensors config tokenizer chat_template completion_request snapshot; do
  work=$(mktemp -d)
  if [[ $target == chat_template ]]; then
    cp tests/data/chat_templates/*.jinja "$work/"  # the real templates the tests render
  else
    cp -r "fuzz/corpus/$target/." "$work/"
  fi
  echo "fuzz: $target ($label)"
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "build/fuzz/fuzz_$target" "${budget[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="build/fuzz/findings/$target-" -print_final_stats=0 "$work" > "build/fuzz/$target.log" 2>&1; then
    echo "fuzz: $target: FINDING (log: build/fuzz/$target.log)"
    tail -n 30 "build/fuzz/$target.log"
    status=1
  else
    grep -aE "^#[0-9]+[[:space:]]+DONE" "build/fuzz/$target.log" | tail -n 1 || true
  fi
  rm -rf "$work"
done
exit $status

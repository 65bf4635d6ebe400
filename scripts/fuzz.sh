#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; preset "fuzz") and runs each for
# FUZZ_SECONDS (default 30) from its seed corpus in fuzz/corpus/. A finding (crash,
# sanitizer report, an exception other than braid's own errors) fails the run and leaves the
# input in build/fuzz/findings/; turn it into a regression test. The seed corpus is read only:
# new inputs go to a scratch copy.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-30}
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j "${JOBS:-$(nproc)}"
mkdir -p build/fuzz/findings
status=0
for target in safetensors config tokenizer completion_request; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$target/." "$work/"
  echo "fuzz: $target for ${SECONDS_EACH}s"
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "build/fuzz/fuzz_$target" -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
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

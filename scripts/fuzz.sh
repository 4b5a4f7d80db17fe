#!/usr/bin/env bash
# Run every cargo-fuzz target for FUZZ_SECONDS (default 60) each and print the executions.
# The stable toolchain runs libFuzzer with RUSTC_BOOTSTRAP=1 (no nightly can be fetched here).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
summary=""
for t in ${FUZZ_TARGETS:-admission spec quantity review}; do
  mkdir -p "fuzz/target/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/target/$t.log"
  if cargo fuzz run "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
       -max_total_time="$secs" -rss_limit_mb=4096 > "$log" 2>&1; then
    result="clean"
  else
    result="FAILED (see $log and fuzz/artifacts/$t)"
  fi
  runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 || true)
  summary+="$t: ${runs:-no run count} — $result"$'\n'
done
printf '%s' "$summary"
! grep -q FAILED <<<"$summary"

#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS_PER_TARGET each (default 60), seeded
# from fixtures/, FUZZ_JOBS at a time (default 1; one per core is the most that helps).
# Fails (non-zero exit) on any crash, timeout or over-limit allocation, after every target
# has run; libFuzzer writes the input under fuzz/artifacts/<target>/. See docs/FUZZING.md.
#
#   fuzz/run.sh                          # every target, 60 s each, one after the other
#   FUZZ_JOBS=2 SECONDS_PER_TARGET=45 fuzz/run.sh    # what .ci/run does
#   SECONDS_PER_TARGET=3600 fuzz/run.sh v2_adt
#   FUZZ_SANITIZER=address fuzz/run.sh   # with AddressSanitizer (slower build and runs)
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-60}"
jobs="${FUZZ_JOBS:-1}"
# Our crates forbid unsafe code, so by default no sanitizer: panics, hangs and the
# allocation bound (fuzz/src/lib.rs, MAX_ALLOCATION_BYTES) are what is checked.
sanitizer="${FUZZ_SANITIZER:-none}"
# cargo-fuzz needs nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP lets the stable compiler take them.
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(mllp_decoder hl7_ingest v2_adt v2_siu v2_orders v2_oru v2_dft fhir_json webhook_json config_load)
fi

# Seeds: the fixtures each target reads (v2 targets take whole messages, see src/lib.rs).
seed() {
  local target="$1"; shift
  mkdir -p "corpus/$target"
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "corpus/$target/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  return 0
}
seed mllp_decoder ../fixtures/hl7v2/adt_a04/*.hl7
seed hl7_ingest ../fixtures/hl7v2/*/*.hl7
seed v2_adt ../fixtures/hl7v2/adt_*/*.hl7
seed v2_siu ../fixtures/hl7v2/siu_*/*.hl7
seed v2_orders ../fixtures/hl7v2/orm_*/*.hl7 ../fixtures/hl7v2/oml_*/*.hl7
seed v2_oru ../fixtures/hl7v2/oru_*/*.hl7
seed v2_dft ../fixtures/hl7v2/dft_*/*.hl7
seed fhir_json ../fixtures/fhir/*/*.input.json ../fixtures/fhir/bundle/adt_a04_full.json ../fixtures/fhir/bundle/siu_s12_full.json
seed webhook_json seeds/webhook_json/*
seed config_load ../conf/channels/*.toml ../conf/examples/*.toml
# MLLP seeds are framed: start block, message, end block, CR.
for f in corpus/mllp_decoder/seed-*.hl7; do
  [ -f "$f" ] || continue
  { printf '\x03\x0b'; cat "$f"; printf '\x1c\x0d'; } > "$f.mllp" && rm "$f"
done

# One build of every target, then the runs, straight from the built binaries.
cargo fuzz build -s "$sanitizer" --release --debug-assertions
bin_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/x86_64-unknown-linux-gnu/release"
mkdir -p logs
# run_one TARGET: one libFuzzer run; its output goes to logs/TARGET.log, printed when it ends.
run_one() {
  local t="$1"
  mkdir -p "artifacts/$t"
  "$bin_dir/$t" "corpus/$t" -max_total_time="$secs" -timeout=1 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 > "logs/$t.log" 2>&1
}
failed=()
report() {
  local t="$1" status="$2"
  echo "== fuzz $t (${secs}s): $([ "$status" -eq 0 ] && echo clean || echo "FAILED, exit $status")"
  grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|stat::slowest_unit_time_sec|stat::peak_rss_mb)' "logs/$t.log" || true
  if [ "$status" -ne 0 ]; then
    # The crash report: libFuzzer's summary, the panic message and the saved input.
    grep -v '^#[0-9]' "logs/$t.log" | tail -40
    failed+=("$t")
  fi
}
declare -A pid_of=()
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "fuzz: no target named $t" >&2; exit 2; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.2; done
  run_one "$t" & pid_of[$t]=$!
  # Report every run that has ended so far.
  for done_t in "${!pid_of[@]}"; do
    if ! kill -0 "${pid_of[$done_t]}" 2>/dev/null; then
      set +e; wait "${pid_of[$done_t]}"; status=$?; set -e
      report "$done_t" "$status"; unset "pid_of[$done_t]"
    fi
  done
done
for t in "${!pid_of[@]}"; do
  set +e; wait "${pid_of[$t]}"; status=$?; set -e
  report "$t" "$status"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}; the inputs are in fuzz/artifacts/<target>/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s) clean, ${secs} s each"

#!/usr/bin/env bash
# Runs every fuzz target (or those named) one after the other, each for SECONDS_PER_TARGET
# (default 60), seeded from fixtures/. Exits non-zero on the first crash, timeout or
# over-limit allocation; libFuzzer writes the input under fuzz/artifacts/<target>/.
# See docs/FUZZING.md.
#
#   fuzz/run.sh                 # every target, 60 s each
#   SECONDS_PER_TARGET=3600 fuzz/run.sh v2_adt
#   FUZZ_SANITIZER=address fuzz/run.sh   # with AddressSanitizer (slower build and runs)
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-60}"
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

# One build of every target, then the runs.
cargo fuzz build -s "$sanitizer" --release --debug-assertions
for t in "${targets[@]}"; do
  echo "== fuzz $t (${secs}s)"
  mkdir -p "artifacts/$t"
  set +e
  cargo fuzz run -s "$sanitizer" --release --debug-assertions "$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=1 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | grep -v '^#[0-9]'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "fuzz $t: failed (exit $status); a crashing input is kept in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done

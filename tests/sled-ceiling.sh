#!/usr/bin/env bash
# What sled 0.34 itself can commit durably on this machine, beside a plain append-only log
# with the same group commit (tests/sled-ceiling/src/main.rs says what each mode writes).
# No network, no parsing: the ceiling the store sets on the engine's acknowledgements, by
# the number of sled inserts per message.
#
#   tests/sled-ceiling.sh                                   # 64 writers, 5 s per mode
#   WRITERS=8 SECS=3 INSERTS="1 2 10" tests/sled-ceiling.sh
#
# Release build of a small package outside the workspace (about a minute; sled only), one
# temporary folder on the data disk (removed at the end). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/sled-ceiling"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/switchboard-sled-ceiling-target}
cargo build --release -q
dir=$(mktemp -d "${SLED_CEILING_DIR:-${TMPDIR:-/tmp}}/sled-ceiling.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "machine: $(nproc) cores; $(uptime)"
"$CARGO_TARGET_DIR/release/sled-ceiling" --dir "$dir" --writers "${WRITERS:-64}" \
  --secs "${SECS:-5}" --inserts "${INSERTS:-1 2 4 6 10}"
echo "after: $(uptime)"

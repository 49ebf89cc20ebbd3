#!/usr/bin/env bash
# How fast the engine's destinations keep up with its own intake, measured with the bench's
# ratio tool (the engine beside the durable floor, one run) on three configurations that differ
# only in the destination the ADT route sends to:
#   file  - the shipped conf/ (a file destination: batched, synced files);
#   mllp  - an MLLP destination whose peer is the bench's canned-ACK server on 127.0.0.1;
#   webhook - a signed webhook destination whose peer is engine/examples/http_sink.rs on
#           127.0.0.1 (200 to every POST), built with the engine's profiling profile;
#   none  - no routes (ingest alone).
# The ratio tool prints msgs/s, the engine/floor ratio, p50/p99, deliveries/s and the backlog
# left when the load stopped.
#
#   tests/bench-destinations.sh --ratio PATH/TO/ratio.sh [--bin target/release/switchboard]
#                         [--conns "8 64"] [--secs 8] [--only "file mllp webhook none"]
#                         [--patients 1] [--tools 4]
#
# With --patients N above 1 the load is not the ratio tool's (every message one patient's,
# so one delivery partition, delivered one message at a time) but TOOLS of the bench's load
# tools at once over N patients in distinct partitions, through tests/cluster-bench.sh
# --nats none (the floor and one engine, the same columns plus the backlog a few seconds
# after the load).
#
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
RATIO=""; BIN=target/release/switchboard; CONNS="8 64"; SECS=8; ONLY="file mllp webhook none"
PATIENTS=1; TOOLS=4
while [ $# -gt 0 ]; do
  case "$1" in
    --ratio) RATIO=$2; shift 2;; --bin) BIN=$2; shift 2;; --conns) CONNS=$2; shift 2;;
    --secs) SECS=$2; shift 2;; --only) ONLY=$2; shift 2;;
    --patients) PATIENTS=$2; shift 2;; --tools) TOOLS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$RATIO" ] || { echo "give the ratio tool with --ratio PATH (it sits beside floor/ and mllp-load/)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no engine binary at $BIN (cargo build --release)" >&2; exit 2; }
BIN=$(readlink -f "$BIN")
bench=$(cd "$(dirname "$RATIO")" && pwd)
# The webhook peer is built in this workspace's own target folder (the same selection as the
# profiling build of docs/PERFORMANCE.md, so nothing else is rebuilt).
case " $ONLY " in
  *" webhook "*)
    cargo build --profile profiling -q --workspace --bin switchboard --example prefill --example http_sink
    SINK_BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/profiling/examples/http_sink;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/switchboard-bench-target}
(cd "$bench/floor" && cargo build --release -q)
(cd "$bench/mllp-load" && cargo build --release -q)
PEER_BIN=$CARGO_TARGET_DIR/release/mllp-baseline
LOAD_BIN=$CARGO_TARGET_DIR/release/mllp-load
work=$(mktemp -d); peer_pid=
# The webhook destination signs with it (a throwaway value: the peer checks nothing).
export BENCH_SIGNING_SECRET=bench-secret
cleanup() { [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Replaces the channel's destinations with one named "archive" of the given keys, delivering
# up to 8 partitions at once.
destination() { # CHANNEL_FILE KEY_LINE...
  local channel=$1; shift
  sed -i '/^\[\[destination\]\]/,$d' "$channel"
  { echo '[[destination]]'; echo 'name = "archive"'; printf '%s\n' "$@"
    echo '[destination.delivery]'; echo 'concurrency = 8'; } >> "$channel"
}

for what in $ONLY; do
  conf="$work/conf-$what"; cp -r conf "$conf"
  channel="$conf/channels/his-adt.toml"
  case "$what" in
    file) ;;
    none)
      # The channel up to its first route: a listener that stores and answers, nothing more.
      sed -i '/^\[\[route\]\]/,$d' "$channel";;
    mllp)
      peer=$(port)
      "$PEER_BIN" --port "$peer" --mode ack >/dev/null 2>&1 & peer_pid=$!
      destination "$channel" 'type = "mllp"' "address = \"127.0.0.1:$peer\"" 'connections = 8';;
    webhook)
      peer=$(port)
      "$SINK_BIN" "$peer" 900 >/dev/null 2>&1 & peer_pid=$!
      destination "$channel" 'type = "webhook"' "url = \"http://127.0.0.1:$peer/hook\"" \
        'signing_secret = { env = "BENCH_SIGNING_SECRET" }';;
    *) echo "unknown configuration $what" >&2; exit 2;;
  esac
  echo "== $what"
  if [ "$PATIENTS" -gt 1 ]; then
    tests/cluster-bench.sh --bin "$BIN" --load "$LOAD_BIN" --floor "$PEER_BIN" --config "$conf" \
      --conns "$CONNS" --secs "$SECS" --nats none --patients "$PATIENTS" --tools "$TOOLS"
  else
    "$RATIO" --bin "$BIN" --config "$conf" --conns "$CONNS" --secs "$SECS"
  fi
  if [ -n "$peer_pid" ]; then kill "$peer_pid" 2>/dev/null; wait "$peer_pid" 2>/dev/null || true; peer_pid=; fi
done

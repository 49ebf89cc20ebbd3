#!/usr/bin/env bash
# Store-size figures for docs/PERFORMANCE.md, against the engine built with the `profiling`
# profile (release optimisations), on 127.0.0.1, durability = "fsync":
#   1. disk and retention, on a store pre-filled with SCALE_OLD_MESSAGES (default: as many as
#      SCALE_DISK_MESSAGES) delivered messages 100 days old and SCALE_DISK_MESSAGES 1 day old:
#      ingest (SCALE_CONNECTIONS connections, SCALE_SECS
#      seconds) while the first retention pass removes the old ones, the same ingest once the
#      pass is done, and the store's bytes on disk per message kept after the pass;
#   2. memory and restart, on a store pre-filled with SCALE_MESSAGES delivered messages:
#      time from process start to /ready answering 200 (twice: the first start after the fill
#      and a restart), resident memory idle and with 1,000 idle MLLP connections open.
# The stores are written by `engine/examples/prefill.rs` (the trees and values the engine
# writes for an ADT message routed to a file destination and delivered) in SCALE_DIR
# (default: a new folder under /tmp), refused when the estimate does not fit on its disk,
# and removed at the end. It measures, it asserts nothing; not run in CI.
#
#   tests/store-scale.sh
#   SCALE_MESSAGES=2000000 SCALE_DISK_MESSAGES=1000000 tests/store-scale.sh
#   SCALE_MESSAGES=0 tests/store-scale.sh          # disk and retention only
#   SCALE_DISK_MESSAGES=0 tests/store-scale.sh     # memory and restart only
set -euo pipefail
cd "$(dirname "$0")/.."
big=${SCALE_MESSAGES:-10000000}
small=${SCALE_DISK_MESSAGES:-1000000}
old=${SCALE_OLD_MESSAGES:-$small}
secs=${SCALE_SECS:-10}
conns=${SCALE_CONNECTIONS:-8}
# Bytes on disk per stored message assumed for the space check (the prefilled store measured
# 2.9 KB per message before its first retention pass with compressed records, 5.6 KB before
# them), and a margin for the rest.
per_msg=${SCALE_BYTES_PER_MESSAGE:-3500}
margin=$((2 * 1024 * 1024 * 1024))

# SCALE_BIN and SCALE_PREFILL run binaries built elsewhere (an earlier commit, for a
# before/after comparison) instead of building this tree.
if [ -z "${SCALE_BIN:-}" ]; then
  cargo build --profile profiling -q --workspace --bin switchboard --example prefill
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fi
bin=${SCALE_BIN:-$target/profiling/switchboard}
prefill=${SCALE_PREFILL:-$target/profiling/examples/prefill}
ulimit -n 20000 2>/dev/null || true

work=${SCALE_DIR:-$(mktemp -d)}
mkdir -p "$work"
# The larger of the two stores is on disk at any time (the first is removed before the second).
need=$(( (big > small + old ? big : small + old) * per_msg + margin ))
free=$(df -B1 --output=avail "$work" | tail -1 | tr -d ' ')
if [ "$need" -gt "$free" ]; then
  echo "store-scale: about $((need / 1073741824)) GiB needed in $work (${per_msg} B a message plus 2 GiB), only $((free / 1073741824)) GiB free; lower SCALE_MESSAGES / SCALE_DISK_MESSAGES or set SCALE_DIR" >&2
  rmdir "$work" 2>/dev/null || true
  exit 1
fi

engine_pid=
holder_pid=
stop_engine() {
  if [ -n "$holder_pid" ]; then kill "$holder_pid" 2>/dev/null || true; wait "$holder_pid" 2>/dev/null || true; fi
  holder_pid=
  if [ -n "$engine_pid" ]; then kill -TERM "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
  engine_pid=
}
trap 'stop_engine; rm -rf "$work"' EXIT
printf 'MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|LOAD|P|2.5.1\rEVN|A04|20250101120000\rPID|1||P-10928^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|O\r' > "$work/adt.hl7"

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$engine_pid/status"; }
bytes() { du -sb "$1" | cut -f1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# conf NAME: one channel "perf" (MLLP, no routes, room for 1,100 connections) on
# $work/NAME/data, fsync, the default retention (90 days, a pass at start).
conf() {
  local dir="$work/$1"
  mkdir -p "$dir/conf/channels"
  cat > "$dir/conf/switchboard.toml" <<TOML
data_dir = "$dir/data"
durability = "fsync"
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
TOML
  cat > "$dir/conf/channels/perf.toml" <<TOML
name = "perf"
[source]
type = "mllp_listener"
listen = "127.0.0.1:0"
max_connections = 1100
max_connections_per_peer = 1100
TOML
}

# start_engine NAME: starts the engine on NAME's conf; sets engine_pid, addr, admin and
# ready_secs (process start to /ready answering 200).
start_engine() {
  local dir="$work/$1" t0
  rm -f "$dir/data/engine.json"
  t0=$(now)
  "$bin" run --config "$dir/conf" &
  engine_pid=$!
  for _ in $(seq 1200); do [ -s "$dir/data/engine.json" ] && break; sleep 0.05; done
  admin=$(sed -n 's/.*"admin": *"\([^"]*\)".*/\1/p' "$dir/data/engine.json")
  addr=$(sed -n 's/.*"perf": *"\([^"]*\)".*/\1/p' "$dir/data/engine.json")
  [ -n "$admin" ] || { echo "engine did not start" >&2; exit 1; }
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/ready")" = 200 ]; do sleep 0.02; done
  ready_secs=$(since "$t0")
}
load() { "$bin" send --to "$addr" --connections "$conns" --duration "$secs" "$work/adt.hl7"; }
purged() { curl -s "http://$admin/metrics" | awk '/^switchboard_store_purged_messages_total/ {print $2}'; }

# hold N: opens N idle MLLP connections to $addr and keeps them until killed.
hold() {
  python3 - "$addr" "$1" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
conns = [socket.create_connection((host, int(port))) for _ in range(int(sys.argv[2]))]
print(f"{len(conns)} connections open", flush=True)
while True:
    time.sleep(60)
PY
  holder_pid=$!
}

fill() { # fill NAME COUNT DAYS_OLD FIRST
  local t0; t0=$(now)
  "$prefill" "$work/$1/data" "$2" "$3" perf "$4" >/dev/null
  echo "filled $2 messages ($3 days old) in $(since "$t0") s"
}

echo "# tests/store-scale.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load: $(loadavg)"
echo "# stores: $old old + $small kept (disk, retention), $big (memory, restart); load: $conns connections, $secs s"

if [ "$small" -gt 0 ]; then
  echo "## disk and retention ($old messages 100 days old, $small 1 day old)"
  conf retained
  fill retained "$old" 100 0
  fill retained "$small" 1 "$old"
  before=$(bytes "$work/retained/data")
  echo "store before the pass: $before bytes, $((before / (old + small))) per message"
  start_engine retained
  echo "ready in $ready_secs s; load: $(loadavg)"
  during=$(load); echo "ingest during the pass: $during"
  t0=$(now)
  until [ "$(purged)" -ge "$old" ] 2>/dev/null; do sleep 0.5; done
  echo "pass done $(since "$t0") s after that run ($(purged) removed)"
  after=$(bytes "$work/retained/data")
  sent=$(echo "$during" | sed -n 's/^sent \([0-9]*\) .*/\1/p')
  kept=$((small + ${sent:-0}))
  echo "store after the pass: $after bytes, $((after / kept)) per message kept ($kept: the fill's and the load's; raw message about 340 bytes)"
  echo "ingest after the pass: $(load)"
  stop_engine
  rm -rf "$work/retained"
fi

if [ "$big" -gt 0 ]; then
  echo "## memory and restart ($big messages)"
  conf big
  fill big "$big" 0 0
  echo "store: $(bytes "$work/big/data") bytes; load: $(loadavg)"
  start_engine big
  echo "first start: ready in $ready_secs s"
  sleep 5
  echo "RSS idle: $(rss_mib) MiB"
  hold 1000
  sleep 5
  echo "RSS with 1,000 idle connections: $(rss_mib) MiB; load: $(loadavg)"
  stop_engine
  start_engine big
  echo "restart: ready in $ready_secs s"
  sleep 5
  echo "RSS idle after the restart: $(rss_mib) MiB"
  stop_engine
fi

#!/usr/bin/env bash
# Performance figures for docs/PERFORMANCE.md, against the release engine on 127.0.0.1:
#   1. MLLP throughput and ACK latency at 1, 8 and 64 connections, durability = "fsync";
#   2. engine memory (RSS) with 1 and with 1,000 connections sending;
#   3. the same 8- and 64-connection runs with encryption at rest on;
#   4. retention: 8 connections while the first retention pass removes PERF_OLD messages
#      (written beforehand by `engine/examples/prefill_old.rs`), against the plain run.
# Each load run lasts PERF_SECS seconds (default 8). Everything stops by itself; the
# temporary data dirs are removed at the end. Not run in CI (it measures, it asserts nothing).
#
#   tests/perf.sh
#   PERF_SECS=15 PERF_OLD=1000000 tests/perf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${PERF_SECS:-8}
old=${PERF_OLD:-500000}

cargo build --release -q -p engine --bin switchboard --example prefill_old
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release/switchboard"
prefill="$target/release/examples/prefill_old"
ulimit -n 20000 2>/dev/null || true

work=$(mktemp -d)
engine_pid=
stop_engine() {
  if [ -n "$engine_pid" ]; then kill -TERM "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
  engine_pid=
}
trap 'stop_engine; rm -rf "$work"' EXIT
printf 'MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|PERF|P|2.5.1\rEVN|A04|20250101120000\rPID|1||P-10928^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|O\r' > "$work/adt.hl7"
export PERF_STORE_KEY=4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708

# start_engine NAME EXTRA_ENGINE_TOML: a fresh conf (one channel "perf", no routes) on
# $work/NAME/data unless it exists already; sets engine_pid and addr.
start_engine() {
  local dir="$work/$1"
  mkdir -p "$dir/conf/channels"
  cat > "$dir/conf/switchboard.toml" <<TOML
data_dir = "$dir/data"
durability = "fsync"
$2
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
TOML
  rm -f "$dir/data/engine.json"
  "$bin" run --config "$dir/conf" &
  engine_pid=$!
  for _ in $(seq 300); do [ -s "$dir/data/engine.json" ] && break; sleep 0.1; done
  addr=$(sed -n 's/.*"perf": *"\([^"]*\)".*/\1/p' "$dir/data/engine.json")
  admin=$(sed -n 's/.*"admin": *"\([^"]*\)".*/\1/p' "$dir/data/engine.json")
  [ -n "$addr" ] || { echo "engine did not start" >&2; exit 1; }
}
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$engine_pid/status"; }
load() { "$bin" send --to "$addr" --connections "$1" --duration "$secs" "$work/adt.hl7"; }

echo "# tests/perf.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# message: 4-segment ADT^A04, $(wc -c < "$work/adt.hl7") bytes; ${secs} s per run; the load tool shares the cores"

echo "## MLLP, fsync"
start_engine plain ""
echo "idle RSS: $(rss_mib) MiB"
for c in 1 8 64; do echo "connections $c: $(load $c)"; done

echo "## memory"
load 1 > "$work/one.txt" & sender=$!
sleep $((secs / 2)); echo "RSS with 1 connection sending: $(rss_mib) MiB"; wait $sender
echo "   ($(cat "$work/one.txt"))"
load 1000 > "$work/thousand.txt" & sender=$!
sleep $((secs / 2)); echo "RSS with 1,000 connections sending: $(rss_mib) MiB"; wait $sender
echo "   ($(cat "$work/thousand.txt"))"
stop_engine

echo "## encryption at rest (ChaCha20-Poly1305), fsync"
start_engine sealed "[encryption]
[[encryption.keys]]
id = \"perf\"
key = { env = \"PERF_STORE_KEY\" }"
for c in 1 8 64; do echo "connections $c: $(load $c)"; done
stop_engine

echo "## retention: 8 connections during the first pass over $old expired messages"
"$prefill" "$work/retained/data" "$old" perf 100 2>/dev/null
du -sh "$work/retained/data" | awk '{print "store before: " $1}'
start=$(date +%s.%N)
start_engine retained ""
echo "connections 8, pass running: $(load 8)"
for _ in $(seq 600); do
  purged=$(curl -s "http://$admin/metrics" | awk '/^switchboard_store_purged_messages_total/ {print $2}')
  [ "${purged:-0}" -ge "$old" ] && break
  sleep 0.5
done
echo "pass: ${purged:-0} removed, done $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s after start"
echo "connections 8, after the pass: $(load 8)"
stop_engine

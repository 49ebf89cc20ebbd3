#!/usr/bin/env bash
# Soak: the engine under steady MLLP load at a fraction of its peak for a long time, one
# line per minute with throughput, ACK latency and the engine's memory, then the growth
# of memory and the drift of latency from the first minute to the last.
#
#   tests/soak.sh                          # 30 minutes at 80% of peak, 8 connections
#   SOAK_MINUTES=2 SOAK_PERCENT=80 SOAK_CONNECTIONS=8 tests/soak.sh
#
# Release build, durability = "fsync", one channel without routes, a fresh data dir under
# a temporary folder (removed at the end). Not run in CI (it takes half an hour).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${SOAK_MINUTES:-30}
percent=${SOAK_PERCENT:-80}
connections=${SOAK_CONNECTIONS:-8}

cargo build --release -q -p engine --bin switchboard
bin=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/switchboard
[ -x "$bin" ] || bin=target/release/switchboard

work=$(mktemp -d)
engine_pid=
cleanup() {
  if [ -n "$engine_pid" ]; then kill -TERM "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/conf/channels"
cat > "$work/conf/switchboard.toml" <<EOF
data_dir = "$work/data"
durability = "fsync"
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
EOF
cat > "$work/conf/channels/soak.toml" <<EOF
name = "soak"
[source]
type = "mllp_listener"
listen = "127.0.0.1:0"
EOF
printf 'MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|SOAK|P|2.5.1\rEVN|A04|20250101120000\rPID|1||P-10928^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|O\r' > "$work/adt.hl7"

"$bin" run --config "$work/conf" &
engine_pid=$!
for _ in $(seq 100); do [ -s "$work/data/engine.json" ] && break; sleep 0.1; done
addr=$(sed -n 's/.*"soak": *"\([^"]*\)".*/\1/p' "$work/data/engine.json")
[ -n "$addr" ] || { echo "engine did not start" >&2; exit 1; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$engine_pid/status"; }
field() { sed -n "s/.*$1 \([0-9.]*\(µs\|ms\)\).*/\1/p"; }
to_us() { case $1 in *µs) echo "${1%µs}";; *ms) awk -v v="${1%ms}" 'BEGIN {printf "%d", v * 1000}';; esac; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(uptime)"
peak_line=$("$bin" send --to "$addr" --connections "$connections" --duration 10 "$work/adt.hl7")
peak=$(echo "$peak_line" | sed -n 's/.*: \([0-9]*\) msgs\/s.*/\1/p')
rate=$((peak * percent / 100))
echo "peak ($connections connections, 10 s): $peak_line"
echo "soak: $minutes min at $rate msgs/s ($percent% of peak)"
printf '%-6s %-10s %-10s %-10s %-10s %-10s %-8s\n' minute msgs/s p50 p99 max rss_MiB negative
first_rss= first_p99= last_rss= last_p99= negatives=0
for m in $(seq "$minutes"); do
  line=$("$bin" send --to "$addr" --connections "$connections" --duration 60 --rate "$rate" "$work/adt.hl7" || true)
  rss=$(rss_kib)
  p50=$(echo "$line" | field p50)
  p99=$(echo "$line" | field p99)
  max=$(echo "$line" | field max)
  tput=$(echo "$line" | sed -n 's/.*: \([0-9]*\) msgs\/s.*/\1/p')
  neg=$(echo "$line" | sed -n 's/.*negative \([0-9]*\).*/\1/p')
  negatives=$((negatives + ${neg:-0}))
  printf '%-6s %-10s %-10s %-10s %-10s %-10s %-8s\n' "$m" "$tput" "$p50" "$p99" "$max" "$((rss / 1024))" "${neg:-?}"
  if [ -z "$first_rss" ]; then first_rss=$rss; first_p99=$(to_us "$p99"); fi
  last_rss=$rss
  last_p99=$(to_us "$p99")
done
echo "memory growth (RSS, minute 1 -> $minutes): $(( (last_rss - first_rss) / 1024 )) MiB ($((first_rss / 1024)) -> $((last_rss / 1024)) MiB)"
echo "latency drift (p99, minute 1 -> $minutes): ${first_p99} µs -> ${last_p99} µs"
echo "negative ACKs in all: $negatives"

# Memory that follows the size of the store (sled keeps state for every page of the database
# in memory) rather than the engine's uptime comes back when the engine is restarted on it.
kill -TERM "$engine_pid"; wait "$engine_pid" 2>/dev/null || true
du -sh "$work/data" | awk '{print "store after the soak: " $1}'
rm -f "$work/data/engine.json"
"$bin" run --config "$work/conf" &
engine_pid=$!
for _ in $(seq 600); do [ -s "$work/data/engine.json" ] && break; sleep 0.1; done
sleep 10
echo "RSS 10 s after a restart on the same store, idle: $(( $(rss_kib) / 1024 )) MiB"

#!/usr/bin/env bash
# Cluster mode against one node, measured side by side with the durable floor in one run: do
# two engine nodes on NATS JetStream sustain at least the throughput of one?
#
#   tests/cluster-bench.sh --bin ENGINE --load LOAD_TOOL --floor FLOOR_SERVER
#                          [--config conf] [--conns "8 64"] [--secs 8] [--settle 3]
#                          [--nats "r3 r1"] [--tools 2] [--patients 1] [--partitions 16]
#
# ENGINE is a built switchboard (a release or profiling build); LOAD_TOOL and FLOOR_SERVER are
# the bench's closed-loop MLLP load tool and its durable floor server (the same two the
# single-node ratio tool uses; this script builds nothing).
#
# For each NATS topology (r3: three clustered servers, stream replicas = 3, as tests/cluster.rs;
# r1: one server, replicas = 1; none: no NATS, only the floor and the plain engine, which is how
# tests/bench-destinations.sh measures a single engine under many patients) and each connection
# count C it measures, in this order:
#   floor   - the floor server (group commit: one fdatasync per batch of messages);
#   plain   - one engine without [cluster] (reference);
#   1 node  - one cluster node: fresh NATS servers, a fresh data folder;
#   2 nodes - two cluster nodes, fresh again, each taking half of the load tools;
#   floor   - the floor server again (the floor figure is the mean of both).
# Every row gets the same load: TOOLS load tools at once with C/TOOLS connections each (closed
# loop, one message in flight per connection), rates summed. Tool i sends a 4-segment ADT^A01
# with its own MSH-4 (so no two tools send the same MSH-3/4/10, which the engine and the stream
# would take for resends) for patient i mod PATIENTS; PATIENTS = 1 is the ratio tool's load
# (every message for one patient: one delivery partition), more patients are picked to fall in
# distinct partitions. The engine rows run the shipped configuration (conf/: one MLLP channel,
# the file destination) with its ports moved, plus a [cluster] table for the cluster rows.
#
# Printed per row: floor msgs/s, engine msgs/s (answered AA), the ratio to the floor, p50/p99
# ACK latency in microseconds (the worst tool of each node: "node A | node B"), deliveries per
# second during the load (switchboard_deliveries_total outcome "delivered", summed over the
# nodes), the backlog SETTLE seconds after the load stopped (messages received minus messages
# delivered, summed over the nodes), answers other than AA, and the 1-minute load average.
# Then, per row, where an answer's time went during the load, from the nodes' metrics summed
# over the nodes: store fsyncs per second, messages answered per fsync, the mean group commit
# (switchboard_store_commit_duration_seconds) and, in cluster rows, the mean wait for the
# stream's acknowledgement (switchboard_cluster_publish_duration_seconds), in milliseconds.
# Progress goes to stderr. Everything listens on 127.0.0.1, every wait is bounded, and the
# script stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=""; LOAD=""; FLOOR=""; CONF=conf; CONNS="8 64"; SECS=8; SETTLE=3; NATS="r3 r1"
TOOLS=2; PATIENTS=1; PARTITIONS=16
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2;; --load) LOAD=$2; shift 2;; --floor) FLOOR=$2; shift 2;;
    --config) CONF=$2; shift 2;; --conns) CONNS=$2; shift 2;; --secs) SECS=$2; shift 2;;
    --settle) SETTLE=$2; shift 2;; --nats) NATS=$2; shift 2;; --tools) TOOLS=$2; shift 2;;
    --patients) PATIENTS=$2; shift 2;; --partitions) PARTITIONS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
for x in "BIN:--bin:the engine" "LOAD:--load:the load tool" "FLOOR:--floor:the floor server"; do
  IFS=: read -r var flag what <<<"$x"
  [ -x "${!var}" ] || { echo "give $what with $flag PATH (an executable)" >&2; exit 2; }
done
# As tests/cluster.rs: SWITCHBOARD_NATS_SERVER, the server .ci/run links, Debian's.
NATS_SERVER=${SWITCHBOARD_NATS_SERVER:-}
for p in /usr/local/bin/nats-server /usr/sbin/nats-server /usr/bin/nats-server; do [ -z "$NATS_SERVER" ] && [ -x "$p" ] && NATS_SERVER=$p; done
[ "$NATS" = none ] || [ -x "$NATS_SERVER" ] || { echo "nats-server is not installed" >&2; exit 2; }
[ "$TOOLS" -ge 2 ] && [ $((TOOLS % 2)) -eq 0 ] || { echo "--tools must be even (half go to each node)" >&2; exit 2; }
for c in $CONNS; do
  [ $((c % TOOLS)) -eq 0 ] || { echo "connections $c do not split over $TOOLS tools" >&2; exit 2; }
done
BIN=$(readlink -f "$BIN"); LOAD=$(readlink -f "$LOAD"); FLOOR=$(readlink -f "$FLOOR")

work=$(mktemp -d); pids=()
# Stops what was started: TERM, then KILL for what is still there after 15 s.
stop() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 150); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
cleanup() { [ ${#pids[@]} -gt 0 ] && stop "${pids[@]}"; rm -rf "$work"; }
trap cleanup EXIT
say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
metric() { # admin-port metric-regex -> the sum of the matching series
  curl -s "http://127.0.0.1:$1/metrics" | awk -v re="$2" '$0 ~ re {s+=$NF} END {printf "%d\n", s}'
}
delivered() { local s=0 a; for a in "$@"; do s=$((s + $(metric "$a" '^switchboard_deliveries_total\\{.*outcome="delivered"'))); done; echo "$s"; }
received() { local s=0 a; for a in "$@"; do s=$((s + $(metric "$a" '^switchboard_messages_received_total'))); done; echo "$s"; }
# timing ADMINS...: "fsyncs commit_sum commit_count publish_sum publish_count", summed over the nodes.
timing() {
  local a
  for a in "$@"; do curl -s "http://127.0.0.1:$a/metrics"; done | awk '
    /^switchboard_store_fsyncs_total/ {f += $NF}
    /^switchboard_store_commit_duration_seconds_sum/ {cs += $NF}
    /^switchboard_store_commit_duration_seconds_count/ {cc += $NF}
    /^switchboard_cluster_publish_duration_seconds_sum/ {ps += $NF}
    /^switchboard_cluster_publish_duration_seconds_count/ {pc += $NF}
    END {printf "%d %.6f %d %.6f %d\n", f, cs, cc, ps, pc}'
}

# The tools' messages: tool i gets MSH-4 LOAD<i> and patient i mod PATIENTS; the patients are
# picked (as the engine hashes PID-3.1: SHA-256, first 8 bytes big-endian, modulo partitions)
# to fall in distinct partitions.
python3 - "$work" "$TOOLS" "$PATIENTS" "$PARTITIONS" <<'PY'
import hashlib, sys
work, tools, patients, partitions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chosen, seen, n = [], set(), 0
while len(chosen) < patients:
    pid = "123456" if n == 0 else f"BENCH{n}"
    part = int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "big") % partitions
    if part not in seen or len(seen) >= partitions:
        seen.add(part); chosen.append(pid)
    n += 1
for i in range(tools):
    pid = chosen[i % patients]
    msg = (f"MSH|^~\\&|MLLPLOAD|LOAD{i}|ENGINE|HOSP|20240101120000||ADT^A01^ADT_A01|0|P|2.5\r"
           "EVN|A01|20240101120000\r"
           f"PID|1||{pid}^^^HOSP^MR||DOE^JOHN^A||19800101|M|||123 MAIN ST^^ANYTOWN^CA^90210^USA||(555)555-5555\r"
           "PV1|1|I|WARD^101^A^HOSP||||1234^SMITH^JANE^^^^MD|||MED||||1|||1234^SMITH^JANE^^^^MD|IN||||||||||||||||||||||||||20240101120000\r")
    open(f"{work}/msg{i}.hl7", "w").write(msg)
PY

# load C PORT... : TOOLS tools at once, spread over the ports in turn; prints one line per
# tool: "<port index> <summary>".
load() {
  local c=$1; shift
  local ports=("$@") tools=() i
  for i in $(seq 0 $((TOOLS - 1))); do
    local k=$((i % ${#ports[@]}))
    ("$LOAD" --addr "127.0.0.1:${ports[$k]}" -c $((c / TOOLS)) -n 50000000 -d "$SECS" --quiet \
      --file "$work/msg$i.hl7" | tail -1 | sed "s/^/$k /" > "$work/tool$i.out") &
    tools+=($!)
  done
  for i in "${tools[@]}"; do wait "$i"; done
  cat "$work"/tool*.out; rm -f "$work"/tool*.out
}

# A copy of the configuration for one engine: ports moved, data and outbox in DIR, and
# [cluster] appended when NODE is given. Prints "mllp admin".
engine_conf() { # DIR [NODE ID URLS REPLICAS]
  local dir=$1 mllp admin; mllp=$(port); admin=$(port)
  mkdir -p "$dir"; cp -r "$CONF" "$dir/conf"
  grep -rl '2575' "$dir/conf" | xargs -r sed -i "s/\b2575\b/$mllp/g"
  grep -rl '8080' "$dir/conf" | xargs -r sed -i "s/\b8080\b/$admin/g"
  if [ $# -gt 1 ]; then
    printf '\n[cluster]\nnode = "%s"\nnode_id = %s\nurls = [%s]\nreplicas = %s\npartitions = %s\n' \
      "$2" "$3" "$4" "$5" "$PARTITIONS" >> "$dir/conf/switchboard.toml"
  fi
  echo "$mllp $admin"
}
start_engine() { # DIR MLLP -> pid in $engine_pid
  (cd "$1" && SWITCHBOARD_DATA_DIR="$1/data" exec "$BIN" run --config "$1/conf" >"$1/engine.log" 2>&1) &
  engine_pid=$!; pids+=("$engine_pid")
  wait_port "$2" || { tail -5 "$1/engine.log" >&2; echo "the engine did not listen on $2" >&2; exit 1; }
}
forget() { local p keep=(); for p in "${pids[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done; pids=("${keep[@]}"); }

# NATS servers for topology r1 or r3 in DIR; sets nats_pids and urls (TOML list).
start_nats() {
  local dir=$1 n; n=${2#r}; mkdir -p "$dir"; nats_pids=(); urls=""
  local ports=() cports=() routes="" i
  for i in $(seq 0 $((n - 1))); do ports+=("$(port)"); cports+=("$(port)"); done
  for i in $(seq 0 $((n - 1))); do routes+="${routes:+, }\"nats-route://127.0.0.1:${cports[$i]}\""; done
  for i in $(seq 0 $((n - 1))); do
    {
      printf 'server_name: n%s\nlisten: "127.0.0.1:%s"\n' "$i" "${ports[$i]}"
      printf 'jetstream {\n  store_dir: "%s"\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}\n' "$dir/store$i"
      [ "$n" -gt 1 ] && printf 'cluster {\n  name: sb\n  listen: "127.0.0.1:%s"\n  routes: [%s]\n}\n' "${cports[$i]}" "$routes"
    } > "$dir/nats$i.conf"
    "$NATS_SERVER" -c "$dir/nats$i.conf" >"$dir/nats$i.log" 2>&1 &
    nats_pids+=($!); pids+=($!)
    urls+="${urls:+, }\"nats://127.0.0.1:${ports[$i]}\""
  done
  for i in $(seq 0 $((n - 1))); do wait_port "${ports[$i]}" || { echo "nats-server did not start" >&2; exit 1; }; done
}
# Waits (at most 60 s) until every node at the given admin ports sees N nodes, none holding
# more than its fair share of the partitions, and no partition without owner.
wait_settled() { # N ADMIN...
  local n=$1; shift
  for _ in $(seq 300); do
    local ok=1 a
    for a in "$@"; do
      curl -s "http://127.0.0.1:$a/api/cluster" | python3 -c "
import json, sys
v = json.load(sys.stdin)
nodes = v.get('nodes', [])
share = -(-v.get('partitions', 1) // $n)
balanced = all(len(x.get('partitions', [])) <= share for x in nodes)
sys.exit(0 if len(nodes) == $n and balanced and not v.get('unowned', [1]) and v.get('connected') else 1)" 2>/dev/null || ok=0
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.2
  done
  say "the cluster did not settle on $n node(s) within 60 s; measuring anyway"
}

# measure LABEL C ADMINS PORTS: one load run against engines; prints the row's fields
# (without the floor) into $work/row.
measure() {
  local label=$1 c=$2 admins=($3) ports=($4)
  local d0 r0 d1 r1 out t0 t1
  d0=$(delivered "${admins[@]}"); t0=$(timing "${admins[@]}")
  out=$(load "$c" "${ports[@]}")
  d1=$(delivered "${admins[@]}"); t1=$(timing "${admins[@]}")
  sleep "$SETTLE"
  local d2 r2; d2=$(delivered "${admins[@]}"); r2=$(received "${admins[@]}")
  echo "$out" > "$work/tools.txt"
  python3 - "$label" "$c" "$d0" "$d1" "$d2" "$r2" "$SECS" "$(loadavg)" "${#ports[@]}" "$work/tools.txt" > "$work/row" <<'PY'
import re, sys
label, c, d0, d1, d2, r2, secs, la, nodes, path = sys.argv[1:]
field = lambda line, k: float(re.search(rf"\b{k}=([0-9.]+)", line).group(1))
rate, errs, lat = 0.0, 0, {}
for line in open(path):
    k, summary = line.split(" ", 1)
    rate += field(summary, "rate")
    errs += int(field(summary, "msgs") - field(summary, "ok"))
    p = lat.setdefault(int(k), [0, 0])
    p[0] = max(p[0], int(field(summary, "p50_us"))); p[1] = max(p[1], int(field(summary, "p99_us")))
lats = " | ".join(f"{p[0]}/{p[1]}" for _, p in sorted(lat.items()))
print(label, c, rate, lats.replace(" ", "_"), (float(d1) - float(d0)) / float(secs), float(r2) - float(d2), errs, la)
PY
  python3 - "$label" "$c" "$SECS" "$(cut -d' ' -f3 "$work/row")" $t0 $t1 > "$work/why" <<'PY'
import sys
label, c, secs, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
f0, cs0, cc0, ps0, pc0, f1, cs1, cc1, ps1, pc1 = map(float, sys.argv[5:15])
fsyncs = (f1 - f0) / secs
commit = 1000 * (cs1 - cs0) / (cc1 - cc0) if cc1 > cc0 else 0
publish = f"{1000 * (ps1 - ps0) / (pc1 - pc0):.2f}" if pc1 > pc0 else "-"
per = rate / fsyncs if fsyncs else 0
print(f"# {c:<4} {label.replace('_', ' '):<8} fsyncs/s {fsyncs:8,.0f}  msgs/fsync {per:6.1f}  "
      f"commit ms {commit:6.2f}  publish ms {publish:>6}")
PY
  say "$label, $c connections: $(cut -d' ' -f3 "$work/row" | xargs printf '%.0f') msgs/s (load $(loadavg))"
}
floor_run() { # C -> rate
  load "$1" "$fport" | python3 -c "
import re, sys
print(sum(float(re.search(r'\brate=([0-9.]+)', l).group(1)) for l in sys.stdin))"
}
print_row() { # FLOOR ROWFILE
  python3 - "$1" "$2" <<'PY'
import sys
fr = float(sys.argv[1])
label, c, er, lats, dps, backlog, errs, la = open(sys.argv[2]).read().split()
label = label.replace("_", " ")
er = float(er)
print(f"{c:<5} {label:<8} {fr:10,.0f} {er:10,.0f} {er / fr if fr else 0:6.2f} "
      f"{lats.replace('_', ' '):>24} {float(dps):11,.0f} {float(backlog):9,.0f} {errs:>5} {la:>5}")
PY
}

fport=$(port); mkdir -p "$work/floor"
"$FLOOR" --port "$fport" --mode group --dir "$work/floor" >/dev/null 2>&1 & pids+=($!)
wait_port "$fport"

echo "# tests/cluster-bench.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); $SECS s per run, backlog $SETTLE s after"
echo "# load: $TOOLS load tools at once, C/$TOOLS connections each, $PATIENTS patient(s); $PARTITIONS partitions"
for topo in $NATS; do
  case "$topo" in
    r1) what="one NATS server, stream replicas = 1"; replicas=1;;
    r3) what="three clustered NATS servers, stream replicas = 3"; replicas=3;;
    none) what="no NATS: one engine without [cluster]"; replicas=0;;
    *) echo "unknown topology $topo (r1, r3 or none)" >&2; exit 2;;
  esac
  node_counts="1 2"; [ "$topo" = none ] && node_counts=""
  echo "## $topo: $what"
  printf '%-5s %-8s %10s %10s %6s %24s %11s %9s %5s %5s\n' \
    conns setup floor/s engine/s ratio "p50/p99 us (A | B)" delivered/s backlog errs load
  for c in $CONNS; do
    say "$topo, $c connections: floor"
    f1=$(floor_run "$c")
    rows=()
    # plain: one engine without [cluster].
    read -r m a <<<"$(engine_conf "$work/plain")"
    start_engine "$work/plain" "$m"; e=$engine_pid
    measure plain "$c" "$a" "$m"; cp "$work/row" "$work/row.plain"; cp "$work/why" "$work/why.plain"; rows+=(plain)
    stop "$e"; forget "$e"; rm -rf "$work/plain"
    # 1 node, then 2 nodes: each on fresh NATS servers and fresh data folders.
    for nodes in $node_counts; do
      start_nats "$work/nats" "$topo"
      admins=(); mports=(); started=()
      for i in $(seq 1 "$nodes"); do
        read -r m a <<<"$(engine_conf "$work/node$i" "sb-$i" "$i" "$urls" "$replicas")"
        start_engine "$work/node$i" "$m"; started+=("$engine_pid"); admins+=("$a"); mports+=("$m")
      done
      wait_settled "$nodes" "${admins[@]}"
      label="${nodes}_node"; [ "$nodes" = 2 ] && label="2_nodes"
      measure "$label" "$c" "${admins[*]}" "${mports[*]}"; cp "$work/row" "$work/row.$nodes"; cp "$work/why" "$work/why.$nodes"; rows+=("$nodes")
      stop "${started[@]}"; forget "${started[@]}"
      stop "${nats_pids[@]}"; forget "${nats_pids[@]}"
      rm -rf "$work/nats" "$work"/node*
    done
    say "$topo, $c connections: floor again"
    f2=$(floor_run "$c")
    fr=$(python3 -c "print(($f1 + $f2) / 2)")
    for r in "${rows[@]}"; do print_row "$fr" "$work/row.$r"; done
    for r in "${rows[@]}"; do cat "$work/why.$r"; done
  done
done
echo "# (engine: $BIN on $CONF; floor: group commit, one fdatasync per batch; load average after: $(cut -d' ' -f1-3 /proc/loadavg))"

#!/usr/bin/env bash
# The end-to-end benchmark, in one run on this machine, all on 127.0.0.1, in two parts:
#
# memcached: the same load against memcached directly and through HAProxy (TCP mode), twemproxy
# and Axoneme (the Rebels' L7 policy, an access-log line per request written to a file). Load
# shapes (set:get 1:4, 1000 keys): 20 connections request/response and 8 connections with 32
# requests in flight, each with 64-byte values and again with 16 KiB values.
#
# Cassandra: the same CQL load (protocol v4; prepared INSERT and SELECT by primary key, 1:4, over
# 1000 rows of the Empire example's attendance.daily_records) against cql-fixture directly and
# through HAProxy (TCP mode) and Axoneme (the Empire's L7 policy, an access-log line per request
# written to a file). Load shapes: 20 connections request/response and 8 connections with 32
# requests in flight.
#
# Every run has a 1 s warm-up, then BENCH_SECONDS measured (10 by default). Each shape is run
# BENCH_ROUNDS times against every target (3 by default), the order of the targets rotating from
# one round to the next so that none always runs first or last; the tables show each figure's
# median over the rounds and the spread of ops/s. Prints Markdown
# tables with the Axoneme/HAProxy, Axoneme/twemproxy (memcached) and Axoneme/direct ratios;
# writes target/bench/results.md and target/bench/results.json. Installs memcached, haproxy and
# nutcracker (twemproxy) with apt when missing.
#
# AXONEME_BIN: use this Axoneme binary instead of building one.
# BENCH_ONLY=memcached or BENCH_ONLY=cassandra: run that part only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS is a positive number, not $rounds" >&2; exit 1; }
only=${BENCH_ONLY:-}
case "$only" in
  "" | memcached | cassandra) ;;
  *) echo "BENCH_ONLY is memcached or cassandra, not $only" >&2; exit 1 ;;
esac
# Whether the part $1 runs.
wanted() {
  [ -z "$only" ] || [ "$only" = "$1" ]
}

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}
tools=(haproxy python3)
wanted memcached && tools+=(memcached nutcracker)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..."
  apt_install "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
# Stops the servers of a part.
stop_servers() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}
cleanup() {
  stop_servers
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binaries run from copies in $tmp/bin: a build elsewhere in this tree may replace the ones
# in target/release while the benchmark runs.
crates=(axoneme-loadgen)
wanted cassandra && crates+=(cql-fixture)
mkdir "$tmp/bin"
if [ -n "${AXONEME_BIN:-}" ]; then
  echo "building ${crates[*]} (release); Axoneme is $AXONEME_BIN..."
  cp "$AXONEME_BIN" "$tmp/bin/axoneme"
else
  crates+=(axoneme)
  echo "building ${crates[*]} (release)..."
fi
cargo build --release --quiet "${crates[@]/#/--package=}"
for crate in "${crates[@]}"; do
  cp "target/release/$crate" "$tmp/bin/"
done
axoneme="$tmp/bin/axoneme"
loadgen="$tmp/bin/axoneme-loadgen"
cql_fixture="$tmp/bin/cql-fixture"

# Ports on 127.0.0.1, away from a system memcached on 11211 and a Cassandra on 9042.
memcached_port=11311
axoneme_port=11312
haproxy_port=11313
twemproxy_port=11314
twemproxy_stats_port=11315
cql_port=9142
cql_axoneme_port=9143
cql_haproxy_port=9144
# The source address of every memcached load connection: fleet maintenance, which the policy
# lets set and get keys under alliance/fleet/.
source_ip=127.0.0.11
# The source address of every CQL load connection: the Empire's outpost, which the policy lets
# insert into attendance.daily_records and, in the benchmark's copy, select from it.
cql_source_ip=127.0.0.31
# Axoneme runs one connection worker thread per core; HAProxy gets as many threads.
cores=$(nproc)
memcached_threads=2

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
ports=()
wanted memcached && ports+=($memcached_port $axoneme_port $haproxy_port $twemproxy_port $twemproxy_stats_port)
wanted cassandra && ports+=($cql_port $cql_axoneme_port $cql_haproxy_port)
for port in "${ports[@]}"; do
  if port_open "$port"; then
    echo "127.0.0.1:$port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

# Waits until $1 succeeds, for up to 10 seconds.
wait_for() {
  for _ in $(seq 100); do
    "$@" && return 0
    sleep 0.1
  done
  echo "gave up waiting for: $*" >&2
  cat "$tmp"/*.err "$tmp/nutcracker.log" >&2 2>/dev/null || true
  exit 1
}

# Writes a HAProxy configuration, TCP mode, from 127.0.0.1:$2 to 127.0.0.1:$3, to $1.
haproxy_config() {
  cat >"$1" <<EOF
global
  nbthread $cores
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend proxied
  bind 127.0.0.1:$2
  default_backend server
backend server
  server server 127.0.0.1:$3
EOF
}

# Prints the time all cores have been busy and idle, in ticks.
cpu_times() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}
# Other work on the machine skews every figure: prints how busy the cores are, in percent, over
# 2 s while the servers of a part are up and idle.
busy_percent() {
  local busy_start idle_start busy_end idle_end
  read -r busy_start idle_start < <(cpu_times)
  sleep 2
  read -r busy_end idle_end < <(cpu_times)
  echo $(((busy_end - busy_start) * 100 / (busy_end - busy_start + idle_end - idle_start + 1)))
}

# Writes what Axoneme saw, from its access log $1 and its API socket $2, as JSON to $3: the log's
# lines, denied entries, bytes, and the entries dropped because the writer fell behind.
access_log_stats() {
  # The log is written off the forwarding path; give the writer a moment to finish.
  sleep 1
  local dropped
  dropped=$("$axoneme" --api "$2" metrics list |
    awk '$1 == "axoneme_access_log_dropped_total" { print $2 }')
  printf '{"lines": %s, "denied": %s, "dropped": "%s", "bytes": %s}\n' "$(wc -l <"$1")" \
    "$(grep -c '"entry_type":"Denied"' "$1" || true)" "${dropped:-unknown}" "$(stat -c %s "$1")" >"$3"
}

# Runs the load generator with "$@" and records its JSON result as a run of part $1, round $2,
# shape $3, target $4 (named $5) in runs.tsv.
record_run() {
  local part=$1 round=$2 shape_name=$3 port=$4 target_name=$5 result
  shift 5
  echo "== round $round: $shape_name -> $target_name (127.0.0.1:$port)"
  if result=$("$loadgen" "$@" --target "127.0.0.1:$port" --duration "$seconds" --warmup 1 --json); then
    echo "   $result"
  else
    result='{"failed": true}'
    echo "   failed"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$part" "$round" "$shape_name" "$target_name" "$result" \
    >>"$tmp/runs.tsv"
}

# Prints the targets "$@" in the order of round $1 of $rounds: rotated by one place a round.
round_order() {
  local round=$1
  shift
  local targets=("$@") i
  for ((i = 0; i < ${#targets[@]}; i++)); do
    echo "${targets[(i + round - 1) % ${#targets[@]}]}"
  done
}
: >"$tmp/runs.tsv"

memcached_part() {
  # memcached; it refuses to run as root unless told which user to be.
  local memcached_args=(-l 127.0.0.1 -p $memcached_port -U 0 -t $memcached_threads -m 256 -c 1024)
  [ "$(id -u)" = 0 ] && memcached_args+=(-u root)
  memcached "${memcached_args[@]}" &
  pids+=($!)

  # Axoneme: the example's endpoints and policy, with the policy's port set to this memcached's.
  sed "s/port: \"11211\"/port: \"$memcached_port\"/" examples/memcached/policy.yaml >"$tmp/policy.yaml"
  cat >"$tmp/axoneme.yaml" <<EOF
accessLog: {path: "$tmp/access.log"}
api: {socket: "$tmp/axoneme.sock"}
endpoints:
  - {name: memcached, ips: ["127.0.0.1"], labels: {app: memcached}}
  - {name: maintenance, ips: ["127.0.0.11"], labels: {function: fleet-maintenance}}
  - {name: monitoring, ips: ["127.0.0.12"], labels: {function: fleet-monitoring}}
  - {name: jedi, ips: ["127.0.0.13"], labels: {role: jedi}}
  - {name: stormtrooper, ips: ["127.0.0.66"], labels: {app: empire}}
policies: [policy.yaml]
listeners:
  - name: memcached
    listen: 127.0.0.1:$axoneme_port
    upstream: 127.0.0.1:$memcached_port
    endpoint: memcached
    direction: ingress
EOF
  "$axoneme" run --config "$tmp/axoneme.yaml" 2>"$tmp/axoneme.err" &
  pids+=($!)

  haproxy_config "$tmp/haproxy.cfg" $haproxy_port $memcached_port
  haproxy -db -f "$tmp/haproxy.cfg" 2>"$tmp/haproxy.err" &
  pids+=($!)

  cat >"$tmp/nutcracker.yml" <<EOF
memcached:
  listen: 127.0.0.1:$twemproxy_port
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  servers:
    - 127.0.0.1:$memcached_port:1
EOF
  nutcracker -c "$tmp/nutcracker.yml" -a 127.0.0.1 -s $twemproxy_stats_port \
    -o "$tmp/nutcracker.log" -p "$tmp/nutcracker.pid" &
  pids+=($!)

  wait_for port_open $memcached_port
  wait_for port_open $haproxy_port
  wait_for port_open $twemproxy_port
  # Not a probe connection to Axoneme: it would come from 127.0.0.1, be refused and logged.
  wait_for grep -q "listening .*127.0.0.1:$axoneme_port" "$tmp/axoneme.err"

  printf '%s; %s; %s' "$(memcached -V)" "$(haproxy -v | head -1 | cut -d' ' -f1-3)" \
    "$(nutcracker -V 2>&1 | head -1)" >"$tmp/memcached.versions"
  echo
  echo "memcached: every target gets the same load, one after another, from $source_ip. memcached" \
    "runs $memcached_threads threads; HAProxy $cores threads; Axoneme $cores connection workers (one" \
    "per core); twemproxy one thread. This machine has $cores cores: the load generator (tokio, $cores" \
    "workers), memcached and the proxy under test share them and nothing is pinned."
  echo
  busy_percent >"$tmp/memcached.busy"
  echo "cores busy before the runs: $(cat "$tmp/memcached.busy")%"

  # name:connections:pipeline:value bytes
  local shapes=("20 conns req/resp, 64 B:20:1:64" "8 conns x 32 pipelined, 64 B:8:32:64"
    "20 conns req/resp, 16 KiB:20:1:16384" "8 conns x 32 pipelined, 16 KiB:8:32:16384")
  local targets=("direct:$memcached_port" "HAProxy:$haproxy_port" "twemproxy:$twemproxy_port"
    "Axoneme:$axoneme_port")
  local shape target shape_name connections pipeline value_size target_name port round
  for shape in "${shapes[@]}"; do
    IFS=: read -r shape_name connections pipeline value_size <<<"$shape"
    for ((round = 1; round <= rounds; round++)); do
      for target in $(round_order $round "${targets[@]}"); do
        IFS=: read -r target_name port <<<"$target"
        record_run memcached $round "$shape_name" "$port" "$target_name" memcache \
          --source $source_ip --connections "$connections" --pipeline "$pipeline" \
          --value-size "$value_size" --ratio 1:4 --keys 1000
      done
    done
  done
  access_log_stats "$tmp/access.log" "$tmp/axoneme.sock" "$tmp/memcached.access.json"
  stop_servers
}

cassandra_part() {
  "$cql_fixture" --listen 127.0.0.1:$cql_port 2>"$tmp/cql-fixture.err" &
  pids+=($!)

  # Axoneme: the example's endpoints and policy, with the policy's port set to this cql-fixture's
  # and one rule added: the outpost may also select from attendance.daily_records.
  sed -e "s/port: \"9042\"/port: \"$cql_port\"/" \
    -e 's/^\( *\)- query_action: insert$/\1- query_action: select\n\1  query_table: "attendance.daily_records"\n&/' \
    examples/cassandra/policy.yaml >"$tmp/cql-policy.yaml"
  grep -A1 'query_action: select$' "$tmp/cql-policy.yaml" | grep -q 'attendance.daily_records' ||
    { echo "could not add the select rule to the Cassandra policy" >&2; exit 1; }
  cat >"$tmp/cql-axoneme.yaml" <<EOF
accessLog: {path: "$tmp/cql-access.log"}
api: {socket: "$tmp/cql-axoneme.sock"}
endpoints:
  - {name: cassandra, ips: ["127.0.0.1"], labels: {app: cassandra}}
  - {name: outpost, ips: ["127.0.0.31"], labels: {app: empire-outpost}}
  - {name: hq, ips: ["127.0.0.32"], labels: {app: empire-hq}}
policies: [cql-policy.yaml]
listeners:
  - name: cassandra
    listen: 127.0.0.1:$cql_axoneme_port
    upstream: 127.0.0.1:$cql_port
    endpoint: cassandra
    direction: ingress
EOF
  "$axoneme" run --config "$tmp/cql-axoneme.yaml" 2>"$tmp/cql-axoneme.err" &
  pids+=($!)

  haproxy_config "$tmp/cql-haproxy.cfg" $cql_haproxy_port $cql_port
  haproxy -db -f "$tmp/cql-haproxy.cfg" 2>"$tmp/cql-haproxy.err" &
  pids+=($!)

  wait_for port_open $cql_port
  wait_for port_open $cql_haproxy_port
  wait_for grep -q "listening .*127.0.0.1:$cql_axoneme_port" "$tmp/cql-axoneme.err"

  printf 'cql-fixture (this workspace); %s' "$(haproxy -v | head -1 | cut -d' ' -f1-3)" \
    >"$tmp/cassandra.versions"
  echo
  echo "Cassandra: every target gets the same load, one after another, from $cql_source_ip." \
    "cql-fixture runs a tokio runtime with one worker per core over one store behind a lock;" \
    "HAProxy $cores threads; Axoneme $cores connection workers."
  echo
  busy_percent >"$tmp/cassandra.busy"
  echo "cores busy before the runs: $(cat "$tmp/cassandra.busy")%"

  # name:connections:pipeline
  local shapes=("20 conns req/resp:20:1" "8 conns x 32 pipelined:8:32")
  # Direct comes first in the first round: its first run creates the keyspace and the table,
  # which the policy does not let the outpost do through Axoneme.
  local targets=("direct:$cql_port" "HAProxy:$cql_haproxy_port" "Axoneme:$cql_axoneme_port")
  local shape target shape_name connections pipeline target_name port round
  for shape in "${shapes[@]}"; do
    IFS=: read -r shape_name connections pipeline <<<"$shape"
    for ((round = 1; round <= rounds; round++)); do
      for target in $(round_order $round "${targets[@]}"); do
        IFS=: read -r target_name port <<<"$target"
        record_run cassandra $round "$shape_name" "$port" "$target_name" cql \
          --source $cql_source_ip --connections "$connections" --pipeline "$pipeline" \
          --mode prepared --ratio 1:4 --keys 1000
      done
    done
  done
  access_log_stats "$tmp/cql-access.log" "$tmp/cql-axoneme.sock" "$tmp/cassandra.access.json"
  stop_servers
}

if wanted memcached; then memcached_part; fi
if wanted cassandra; then cassandra_part; fi

mkdir -p target/bench
BENCH_SECONDS=$seconds BENCH_ROUNDS=$rounds CORES=$cores MEMCACHED_THREADS=$memcached_threads \
  python3 - "$tmp" target/bench/results.json target/bench/results.md <<'EOF'
import json, os, platform, statistics, subprocess, sys

tmp, json_path, md_path = sys.argv[1:]
env = os.environ
seconds = env["BENCH_SECONDS"]
rounds = int(env["BENCH_ROUNDS"])
cores = env["CORES"]

def read(name):
    with open(os.path.join(tmp, name)) as file:
        return file.read().strip()

runs_by_part = {"memcached": [], "cassandra": []}
for line in open(os.path.join(tmp, "runs.tsv")):
    part, round_number, shape, target, result = line.rstrip("\n").split("\t", 4)
    run = json.loads(result)
    run["address"] = run.pop("target", None)
    runs_by_part[part].append({"round": int(round_number), "shape": shape, "target": target, **run})

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"

def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024)

rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
machine = {
    "cores": int(cores),
    "cpu": cpu_model(),
    "memory_gib": mem_gib(),
    "kernel": platform.release(),
    "rustc": rustc,
}
shared_notes = [
    f"All on one {cores}-core machine over 127.0.0.1: the load generator (tokio, one worker "
    "per core), the server and the proxy under test compete for the same cores; nothing is "
    "pinned.",
    "Targets run one after another; only the one under test has load. Each shape runs "
    f"{rounds} round(s) over every target, the targets' order rotating by one place a round; "
    "each figure is the median over the rounds, and ops/s also shows the lowest and highest "
    "round.",
]
latency_note = (
    "Closed-loop load: a connection sends a request when a reply frees a place in its pipeline. "
    "Latency is from a request's write to its whole reply, in microseconds."
)
metrics = [("ops_per_sec", "ops/s"), ("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9")]

def summaries(runs):
    """Per shape and target, in the order first run: each figure's median over the rounds that
    did not fail, the lowest and highest ops/s, and the errors of every round."""
    found = []
    for shape, target in dict.fromkeys((run["shape"], run["target"]) for run in runs):
        mine = [run for run in runs if run["shape"] == shape and run["target"] == target]
        good = [run for run in mine if not run.get("failed")]
        summary = {"shape": shape, "target": target, "rounds": len(good), "failed": len(mine) - len(good)}
        if good:
            for key, _ in metrics:
                summary[key] = statistics.median(run[key] for run in good)
            summary["ops_per_sec_min"] = min(run["ops_per_sec"] for run in good)
            summary["ops_per_sec_max"] = max(run["ops_per_sec"] for run in good)
            summary["errors"] = sum(run["errors"] for run in good)
        found.append(summary)
    return found

def ratios(runs, summary, others):
    """Axoneme's median figures over each other target's, per shape, with the lowest and highest
    of the per-round ops/s ratios (each round's runs are minutes apart at most)."""
    def find(shape, target):
        for entry in summary:
            if entry["shape"] == shape and entry["target"] == target and entry["rounds"]:
                return entry

    def ops(shape, target, round_number):
        for run in runs:
            if (run["shape"], run["target"], run["round"]) == (shape, target, round_number):
                return None if run.get("failed") else run["ops_per_sec"]

    found = []
    for shape in dict.fromkeys(entry["shape"] for entry in summary):
        axoneme = find(shape, "Axoneme")
        for other in others:
            base = find(shape, other)
            if not (axoneme and base):
                continue
            ratio = {"shape": shape, "ratio": f"Axoneme/{other}"}
            for key, _ in metrics:
                ratio[key] = round(axoneme[key] / base[key], 2) if base[key] else None
            per_round = []
            for round_number in range(1, rounds + 1):
                mine, theirs = ops(shape, "Axoneme", round_number), ops(shape, other, round_number)
                if mine and theirs:
                    per_round.append(mine / theirs)
            if per_round:
                ratio["ops_per_sec_rounds_min"] = round(min(per_round), 2)
                ratio["ops_per_sec_rounds_max"] = round(max(per_round), 2)
            found.append(ratio)
    return found

def number(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"

def tables(section):
    """The Markdown of a part's runs, ratios, access log and notes."""
    md = [
        "| target | shape | ops/s | ops/s lowest–highest | p50 µs | p99 µs | p99.9 µs | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in section["summary"]:
        failed = f" ({entry['failed']} failed)" if entry["failed"] else ""
        if not entry["rounds"]:
            md.append(f"| {entry['target']} | {entry['shape']} | failed | | | | | |")
            continue
        md.append(
            f"| {entry['target']} | {entry['shape']} | {number(entry['ops_per_sec'], 0)}{failed} | "
            f"{number(entry['ops_per_sec_min'], 0)}–{number(entry['ops_per_sec_max'], 0)} | "
            f"{number(entry['p50_us'])} | {number(entry['p99_us'])} | "
            f"{number(entry['p99_9_us'])} | {entry['errors']} |"
        )
    md += [
        "",
        "Ratios of the medians (ops/s: above 1 is faster; latency: above 1 is slower), and the "
        "lowest and highest ops/s ratio of a single round:",
        "",
        "| shape | ratio | ops/s | ops/s per round | p50 | p99 | p99.9 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for ratio in section["ratios"]:
        spread = "-"
        if "ops_per_sec_rounds_min" in ratio:
            spread = f"{ratio['ops_per_sec_rounds_min']:.2f}–{ratio['ops_per_sec_rounds_max']:.2f}"
        md.append(
            f"| {ratio['shape']} | {ratio['ratio']} | {number(ratio['ops_per_sec'], 2)} | "
            f"{spread} | "
            + " | ".join(number(ratio[key], 2) for key, _ in metrics[1:])
            + " |"
        )
    log = section["axoneme_access_log"]
    md += [
        "",
        f"Axoneme access log: {log['lines']:,} lines ({log['bytes'] / 2**20:,.0f} MiB), "
        f"{log['denied']} denied, {log['dropped']} dropped by a writer that fell behind.",
        "",
    ]
    md += [f"- {note}" for note in section["notes"]]
    return md

results = {
    "seconds": int(seconds),
    "rounds": rounds,
    "command": f"BENCH_SECONDS={seconds} BENCH_ROUNDS={rounds} scripts/bench.sh",
    "machine": machine,
}
md = [
    f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, Linux "
    f"{machine['kernel']}, {machine['rustc']}.",
]
if runs_by_part["memcached"]:
    machine["servers"] = read("memcached.versions")
    machine["cpu_busy_percent_before"] = int(read("memcached.busy"))
    memcached = {
        "notes": shared_notes + [
            f"memcached: {env['MEMCACHED_THREADS']} threads. HAProxy: mode tcp, nbthread {cores}. "
            f"Axoneme: {cores} connection workers, memcache parser, Rebels' policy, JSON access log to "
            "a file. twemproxy: one thread, one server connection shared by all clients.",
            latency_note,
        ],
        "runs": runs_by_part["memcached"],
        "summary": summaries(runs_by_part["memcached"]),
        "axoneme_access_log": json.loads(read("memcached.access.json")),
    }
    memcached["ratios"] = ratios(
        memcached["runs"], memcached["summary"], ("HAProxy", "twemproxy", "direct")
    )
    results.update(memcached)
    md += [
        "",
        "## memcached",
        "",
        f"Servers: {machine['servers']}.",
        f"Load: set:get 1:4 over 1000 keys, 1 s warm-up, {seconds} s measured per run, "
        f"{rounds} round(s). "
        f"Cores busy with other work just before the runs: {machine['cpu_busy_percent_before']}%.",
        "",
    ] + tables(memcached)
if runs_by_part["cassandra"]:
    cassandra = {
        "servers": read("cassandra.versions"),
        "cpu_busy_percent_before": int(read("cassandra.busy")),
        "notes": shared_notes + [
            f"cql-fixture: the workspace's in-memory CQL server (release build; {cores} tokio "
            f"workers, one store behind a lock), not Cassandra. HAProxy: mode tcp, nbthread "
            f"{cores}. Axoneme: {cores} connection workers, cassandra parser, the Empire's policy "
            "with a select rule added for the outpost, JSON access log to a file.",
            "CQL protocol v4, uncompressed; each connection prepares the INSERT and the SELECT "
            "and then sends EXECUTE, rows without metadata; keys are rows outpost-0 .. "
            "outpost-999, from 127.0.0.31 (the outpost).",
            latency_note,
        ],
        "runs": runs_by_part["cassandra"],
        "summary": summaries(runs_by_part["cassandra"]),
        "axoneme_access_log": json.loads(read("cassandra.access.json")),
    }
    cassandra["ratios"] = ratios(cassandra["runs"], cassandra["summary"], ("HAProxy", "direct"))
    results["cassandra"] = cassandra
    md += [
        "",
        "## Cassandra",
        "",
        f"Servers: {cassandra['servers']}.",
        f"Load: prepared INSERT:SELECT by primary key 1:4 over 1000 rows of "
        f"attendance.daily_records, 1 s warm-up, {seconds} s measured per run, {rounds} "
        f"round(s). Cores busy with "
        f"other work just before the runs: {cassandra['cpu_busy_percent_before']}%.",
        "",
    ] + tables(cassandra)
with open(json_path, "w") as out:
    json.dump(results, out, indent=2)
    out.write("\n")
text = "\n".join(md) + "\n"
with open(md_path, "w") as out:
    out.write(text)
print(text)
EOF
echo "written: target/bench/results.md, target/bench/results.json"

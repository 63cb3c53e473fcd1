#!/usr/bin/env bash
# The memcached benchmark: the same load against memcached directly and through HAProxy (TCP
# mode), twemproxy and Axoneme (the Rebels' L7 policy, an access-log line per request written to
# a file), in one run on this machine, all on 127.0.0.1.
#
# Load shapes (set:get 1:4, 1000 keys, a 1 s warm-up, then BENCH_SECONDS measured, 10 by default):
#   20 connections request/response and 8 connections with 32 requests in flight, each with
#   64-byte values and again with 16 KiB values.
# Prints a Markdown table and the Axoneme/HAProxy, Axoneme/twemproxy and Axoneme/direct ratios;
# writes target/bench/results.md and target/bench/results.json. Installs memcached, haproxy and
# nutcracker (twemproxy) with apt when missing. AXONEME_BIN: use this Axoneme binary instead of
# building one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${BENCH_SECONDS:-10}

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}
missing=()
for tool in memcached haproxy nutcracker python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..."
  apt_install "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }

if [ -n "${AXONEME_BIN:-}" ]; then
  echo "building axoneme-loadgen (release); Axoneme is $AXONEME_BIN..."
  cargo build --release --quiet -p axoneme-loadgen
  axoneme=$AXONEME_BIN
else
  echo "building axoneme and axoneme-loadgen (release)..."
  cargo build --release --quiet -p axoneme -p axoneme-loadgen
  axoneme="$root/target/release/axoneme"
fi
loadgen="$root/target/release/axoneme-loadgen"

# Ports on 127.0.0.1, away from a system memcached on 11211.
memcached_port=11311
axoneme_port=11312
haproxy_port=11313
twemproxy_port=11314
twemproxy_stats_port=11315
# The source address of every load connection: fleet maintenance, which the policy lets set and
# get keys under alliance/fleet/.
source_ip=127.0.0.11
# Axoneme runs a tokio multi-thread runtime with one worker per core; HAProxy gets as many threads.
cores=$(nproc)
memcached_threads=2

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in $memcached_port $axoneme_port $haproxy_port $twemproxy_port $twemproxy_stats_port; do
  if port_open "$port"; then
    echo "127.0.0.1:$port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# memcached; it refuses to run as root unless told which user to be.
memcached_args=(-l 127.0.0.1 -p $memcached_port -U 0 -t $memcached_threads -m 256 -c 1024)
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

cat >"$tmp/haproxy.cfg" <<EOF
global
  nbthread $cores
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend memcached
  bind 127.0.0.1:$haproxy_port
  default_backend memcached
backend memcached
  server memcached 127.0.0.1:$memcached_port
EOF
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
wait_for port_open $memcached_port
wait_for port_open $haproxy_port
wait_for port_open $twemproxy_port
# Not a probe connection to Axoneme: it would come from 127.0.0.1, be refused and logged.
wait_for grep -q "listening" "$tmp/axoneme.err"

versions=$(printf '%s; %s; %s' "$(memcached -V)" "$(haproxy -v | head -1 | cut -d' ' -f1-3)" \
  "$(nutcracker -V 2>&1 | head -1)")
echo
echo "Every target gets the same load, one after another, from $source_ip. memcached runs" \
  "$memcached_threads threads; HAProxy $cores threads; Axoneme $cores tokio workers (one per core);" \
  "twemproxy one thread. This machine has $cores cores: the load generator (tokio, $cores workers)," \
  "memcached and the proxy under test share them and nothing is pinned."
echo

# name:connections:pipeline:value bytes
shapes=("20 conns req/resp, 64 B:20:1:64" "8 conns x 32 pipelined, 64 B:8:32:64"
  "20 conns req/resp, 16 KiB:20:1:16384" "8 conns x 32 pipelined, 16 KiB:8:32:16384")
targets=("direct:$memcached_port" "HAProxy:$haproxy_port" "twemproxy:$twemproxy_port"
  "Axoneme:$axoneme_port")
# Other work on the machine skews every figure: measure how busy the cores are for 2 s before the
# runs, while every server is up and idle.
cpu_times() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}
read -r busy_start idle_start < <(cpu_times)
sleep 2
read -r busy_end idle_end < <(cpu_times)
busy_before=$(((busy_end - busy_start) * 100 / (busy_end - busy_start + idle_end - idle_start + 1)))
echo "cores busy before the runs: $busy_before%"
: >"$tmp/runs.tsv"
for shape in "${shapes[@]}"; do
  IFS=: read -r shape_name connections pipeline value_size <<<"$shape"
  for target in "${targets[@]}"; do
    IFS=: read -r target_name port <<<"$target"
    echo "== $shape_name -> $target_name (127.0.0.1:$port)"
    if result=$("$loadgen" memcache --target "127.0.0.1:$port" --source $source_ip --connections "$connections" \
      --pipeline "$pipeline" --value-size "$value_size" --ratio 1:4 --keys 1000 \
      --duration "$seconds" --warmup 1 --json); then
      echo "   $result"
    else
      result='{"failed": true}'
      echo "   failed"
    fi
    printf '%s\t%s\t%s\n' "$shape_name" "$target_name" "$result" >>"$tmp/runs.tsv"
  done
done

# What Axoneme saw: its access log, and the entries it dropped because the writer fell behind.
# The log is written off the forwarding path; give the writer a moment to finish.
sleep 1
access_log_lines=$(wc -l <"$tmp/access.log")
access_log_denied=$(grep -c '"entry_type":"Denied"' "$tmp/access.log" || true)
access_log_dropped=$("$axoneme" --api "$tmp/axoneme.sock" metrics list |
  awk '$1 == "axoneme_access_log_dropped_total" { print $2 }')
access_log_bytes=$(stat -c %s "$tmp/access.log")

mkdir -p target/bench
BENCH_SECONDS=$seconds BUSY_BEFORE=$busy_before CORES=$cores MEMCACHED_THREADS=$memcached_threads VERSIONS="$versions" \
  ACCESS_LOG_LINES=$access_log_lines ACCESS_LOG_DENIED=$access_log_denied \
  ACCESS_LOG_DROPPED=${access_log_dropped:-unknown} ACCESS_LOG_BYTES=$access_log_bytes \
  python3 - "$tmp/runs.tsv" target/bench/results.json target/bench/results.md <<'EOF'
import json, os, platform, subprocess, sys

runs_file, json_path, md_path = sys.argv[1:]
env = os.environ
runs = []
for line in open(runs_file):
    shape, target, result = line.rstrip("\n").split("\t", 2)
    run = json.loads(result)
    run["address"] = run.pop("target", None)
    runs.append({"shape": shape, "target": target, **run})

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
    "cores": int(env["CORES"]),
    "cpu": cpu_model(),
    "memory_gib": mem_gib(),
    "kernel": platform.release(),
    "rustc": rustc,
    "servers": env["VERSIONS"],
    "cpu_busy_percent_before": int(env["BUSY_BEFORE"]),
}
notes = [
    f"All on one {env['CORES']}-core machine over 127.0.0.1: the load generator (tokio, one worker "
    "per core), memcached and the proxy under test compete for the same cores; nothing is pinned.",
    "Targets run one after another; only the one under test has load.",
    f"memcached: {env['MEMCACHED_THREADS']} threads. HAProxy: mode tcp, nbthread {env['CORES']}. "
    f"Axoneme: {env['CORES']} tokio workers, memcache parser, Rebels' policy, JSON access log to a "
    "file. twemproxy: one thread, one server connection shared by all clients.",
    "Closed-loop load: a connection sends a request when a reply frees a place in its pipeline. "
    "Latency is from a request's write to its whole reply, in microseconds.",
]
shapes = list(dict.fromkeys(run["shape"] for run in runs))
metrics = [("ops_per_sec", "ops/s"), ("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9")]

def find(shape, target):
    for run in runs:
        if run["shape"] == shape and run["target"] == target and not run.get("failed"):
            return run

ratios = []
for shape in shapes:
    axoneme = find(shape, "Axoneme")
    for other in ("HAProxy", "twemproxy", "direct"):
        base = find(shape, other)
        if not (axoneme and base):
            continue
        ratio = {"shape": shape, "ratio": f"Axoneme/{other}"}
        for key, _ in metrics:
            ratio[key] = round(axoneme[key] / base[key], 2) if base[key] else None
        ratios.append(ratio)

access_log = {
    "lines": int(env["ACCESS_LOG_LINES"]),
    "denied": int(env["ACCESS_LOG_DENIED"]),
    "dropped": env["ACCESS_LOG_DROPPED"],
    "bytes": int(env["ACCESS_LOG_BYTES"]),
}
results = {
    "seconds": int(env["BENCH_SECONDS"]),
    "command": f"BENCH_SECONDS={env['BENCH_SECONDS']} scripts/bench.sh",
    "machine": machine,
    "notes": notes,
    "runs": runs,
    "ratios": ratios,
    "axoneme_access_log": access_log,
}
with open(json_path, "w") as out:
    json.dump(results, out, indent=2)
    out.write("\n")

def number(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"

md = [
    f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, Linux "
    f"{machine['kernel']}, {machine['rustc']}; {machine['servers']}.",
    f"Load: set:get 1:4 over 1000 keys, 1 s warm-up, {env['BENCH_SECONDS']} s measured per run. "
    f"Cores busy with other work just before the runs: {machine['cpu_busy_percent_before']}%.",
    "",
    "| target | shape | ops/s | p50 µs | p99 µs | p99.9 µs | errors |",
    "|---|---|---:|---:|---:|---:|---:|",
]
for run in runs:
    if run.get("failed"):
        md.append(f"| {run['target']} | {run['shape']} | failed | | | | |")
        continue
    md.append(
        f"| {run['target']} | {run['shape']} | {number(run['ops_per_sec'], 0)} | "
        f"{number(run['p50_us'])} | {number(run['p99_us'])} | {number(run['p99_9_us'])} | "
        f"{run['errors']} |"
    )
md += [
    "",
    "Ratios (ops/s: above 1 is faster; latency: above 1 is slower):",
    "",
    "| shape | ratio | ops/s | p50 | p99 | p99.9 |",
    "|---|---|---:|---:|---:|---:|",
]
for ratio in ratios:
    md.append(
        f"| {ratio['shape']} | {ratio['ratio']} | "
        + " | ".join(number(ratio[key], 2) for key, _ in metrics)
        + " |"
    )
md += [
    "",
    f"Axoneme access log: {access_log['lines']:,} lines ({access_log['bytes'] / 2**20:,.0f} MiB), "
    f"{access_log['denied']} denied, {access_log['dropped']} dropped by a writer that fell behind.",
    "",
]
md += [f"- {note}" for note in notes]
text = "\n".join(md) + "\n"
with open(md_path, "w") as out:
    out.write(text)
print(text)
EOF
echo "written: target/bench/results.md, target/bench/results.json"

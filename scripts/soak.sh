#!/usr/bin/env bash
# The byte-exact soak: memcached behind `axoneme run`, driven by `axoneme-loadgen soak`, which
# reads back and compares every value it writes, checks that every denied request gets the
# denial, and at the end asks memcached directly whether any denied request reached it. Around
# it, this script churns policy (in-place edits of a watched file, atomic renames over another,
# API imports and deletes, SIGHUP) in ways that keep what the soak's identities may do the same
# at every instant, and kills, stalls and restarts the upstream of a second listener that fault
# clients use. Ends with one summary line; exits non-zero on any failure.
#
#   scripts/soak.sh [--requests N] [--debug] [--no-build] [--connections N] [--pipeline N]
#                   [--churn-interval SECONDS] [--seed N]
#
# --requests: requests of the verifying traffic (1,000,000 by default).
# --debug: use the debug build (faster to build, slower to run); the default is release.
# --no-build: use the binaries already in target/ instead of building them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

requests=1000000
profile=release
build=yes
connections=9
pipeline=4
churn_interval=0.2
seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    --no-build) build=no; shift ;;
    --connections) connections=$2; shift 2 ;;
    --pipeline) pipeline=$2; shift 2 ;;
    --churn-interval) churn_interval=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--requests N] [--debug] [--no-build] [--connections N] [--pipeline N] [--churn-interval S] [--seed N]" >&2; exit 2 ;;
  esac
done
command -v memcached >/dev/null || { echo "memcached is required (apt-get install memcached)" >&2; exit 1; }

if [ "$build" = yes ]; then
  flags=(--locked -p axoneme -p axoneme-loadgen)
  [ "$profile" = release ] && flags+=(--release)
  echo "building axoneme and axoneme-loadgen ($profile)..." >&2
  cargo build --quiet "${flags[@]}"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binaries run from copies: a build elsewhere in this tree may replace them meanwhile.
mkdir "$tmp/bin"
target_dir=${CARGO_TARGET_DIR:-target}
cp "$target_dir/$profile/axoneme" "$target_dir/$profile/axoneme-loadgen" "$tmp/bin/"
axoneme="$tmp/bin/axoneme"
loadgen="$tmp/bin/axoneme-loadgen"

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
# Prints a port on 127.0.0.1 that nothing listens on and that is not among "$@". It is below the
# ephemeral range, so no client connection holds it when the killed upstream starts again there.
ephemeral_start=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
free_port() {
  local port
  while :; do
    port=$((10000 + RANDOM % (ephemeral_start - 10000)))
    [[ " $* " == *" $port "* ]] || port_open "$port" || { echo "$port"; return; }
  done
}
# Waits until "$@" succeeds, for up to 10 seconds.
wait_for() {
  for _ in $(seq 100); do
    "$@" && return 0
    sleep 0.1
  done
  echo "gave up waiting for: $*" >&2
  cat "$tmp/agent.log" >&2 || true
  exit 1
}

server_port=$(free_port)
faulty_port=$(free_port "$server_port")
proxy_port=$(free_port "$server_port" "$faulty_port")
faulty_proxy_port=$(free_port "$server_port" "$faulty_port" "$proxy_port")
# memcached takes values up to 2 MiB (-I), so that the soak's 1 MiB values fit with their key;
# it refuses to run as root unless told which user to be.
memcached_args=(-l 127.0.0.1 -U 0 -t 2 -c 4096 -I 2m)
[ "$(id -u)" = 0 ] && memcached_args+=(-u root)
memcached "${memcached_args[@]}" -p "$server_port" -m 1024 &
pids+=($!)

# The policy: fleet maintenance (127.0.0.11, the verifying traffic) may write and read
# alliance/fleet/, fleet monitoring (127.0.0.12, the garbage senders) may only read it; the Jedi
# rules change with the churn and concern nobody the soak runs as.
ports="[{port: \"$server_port\"}, {port: \"$faulty_port\"}]"
# Writes the main policy, with the Jedi's rule on keys under alliance/jedi/$1/, to $2.
main_policy() {
  cat >"$2" <<EOF
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: soak}
spec:
  endpointSelector: {matchLabels: {app: memcached}}
  ingress:
    - fromEndpoints: [{matchLabels: {function: fleet-maintenance}}]
      toPorts:
        - ports: $ports
          rules:
            l7proto: memcache
            l7:
              - {command: writeGroup, keyPrefix: alliance/fleet/}
              - {command: get, keyPrefix: alliance/fleet/}
    - fromEndpoints: [{matchLabels: {function: fleet-monitoring}}]
      toPorts:
        - ports: $ports
          rules: {l7proto: memcache, l7: [{command: get, keyPrefix: alliance/fleet/}]}
    - fromEndpoints: [{matchLabels: {role: jedi}}]
      toPorts:
        - ports: $ports
          rules: {l7proto: memcache, l7: [{command: get, keyPrefix: "alliance/jedi/$1/"}]}
EOF
}
# Prints a policy named $1 for the Jedi, on keys under alliance/jedi/$2/.
jedi_policy() {
  printf '%s\n' "apiVersion: cilium.io/v2" "kind: CiliumNetworkPolicy" "metadata: {name: $1}" \
    "spec:" "  endpointSelector: {matchLabels: {app: memcached}}" "  ingress:" \
    "    - fromEndpoints: [{matchLabels: {role: jedi}}]" \
    "      toPorts: [{ports: $ports, rules: {l7proto: memcache, l7: [{command: writeGroup, keyPrefix: \"alliance/jedi/$2/\"}]}}]"
}
main_policy 0 "$tmp/policy.yaml"
jedi_policy soak-edited 0 >"$tmp/edited.yaml"
cat >"$tmp/axoneme.yaml" <<EOF
accessLog: {path: "$tmp/access.log"}
api: {socket: "$tmp/api.sock"}
endpoints:
  - {name: memcached, ips: ["127.0.0.1"], labels: {app: memcached}}
  - {name: maintenance, ips: ["127.0.0.11"], labels: {function: fleet-maintenance}}
  - {name: monitoring, ips: ["127.0.0.12"], labels: {function: fleet-monitoring}}
  - {name: jedi, ips: ["127.0.0.13"], labels: {role: jedi}}
policies: [policy.yaml, edited.yaml]
listeners:
  - {name: soak, listen: "127.0.0.1:$proxy_port", upstream: "127.0.0.1:$server_port", endpoint: memcached, direction: ingress}
  - {name: faulty, listen: "127.0.0.1:$faulty_proxy_port", upstream: "127.0.0.1:$faulty_port", endpoint: memcached, direction: ingress}
EOF
"$axoneme" run --config "$tmp/axoneme.yaml" 2>"$tmp/agent.log" &
agent=$!
pids+=($agent)
wait_for port_open "$server_port"
wait_for grep -q "listening .*127.0.0.1:$faulty_proxy_port" "$tmp/agent.log"
cli() {
  "$axoneme" --api "$tmp/api.sock" "$@"
}
revision() {
  cli metrics list | awk '$1 == "axoneme_policy_revision" { print $2 }'
}
first_revision=$(revision)

# Policy churn, one change every $churn_interval seconds, each logged to churn.log by kind.
churn() {
  local n=0
  while :; do
    n=$((n + 1))
    case $((n % 5)) in
      0) jedi_policy soak-edited "$n" >"$tmp/edited.yaml" && echo edit ;;
      1) main_policy "$n" "$tmp/policy.yaml.new" && mv "$tmp/policy.yaml.new" "$tmp/policy.yaml" && echo rename ;;
      2) jedi_policy soak-imported "$n" >"$tmp/imported.yaml" && cli policy import "$tmp/imported.yaml" >/dev/null && echo import ;;
      3) cli policy delete soak-imported >/dev/null && echo delete ;;
      4) kill -HUP "$agent" && echo sighup ;;
    esac >>"$tmp/churn.log" || echo failed >>"$tmp/churn.log"
    sleep "$churn_interval"
  done
}
# The second listener's upstream: runs a while, then is killed or stalled, and so on.
upstream_faults() {
  local pid n=0
  trap 'kill -CONT "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; exit 0' TERM
  while :; do
    memcached "${memcached_args[@]}" -p "$faulty_port" -m 64 &
    pid=$!
    sleep 1 & wait $!
    n=$((n + 1))
    if [ $((n % 3)) = 0 ] && kill -STOP "$pid" 2>/dev/null; then
      sleep 0.5 & wait $!
      kill -CONT "$pid"
      echo stall >>"$tmp/upstream.log"
      sleep 1 & wait $!
    fi
    # A memcached that could not start is not counted as killed.
    if kill -KILL "$pid" 2>/dev/null; then echo kill >>"$tmp/upstream.log"; fi
    wait "$pid" 2>/dev/null || true
    sleep 0.2 & wait $!
  done
}
: >"$tmp/churn.log"
: >"$tmp/upstream.log"
churn &
churn_pid=$!
pids+=($churn_pid)
upstream_faults &
upstream_pid=$!
pids+=($upstream_pid)

echo "soak: $requests requests through axoneme ($profile) on 127.0.0.1:$proxy_port to memcached on" \
  "127.0.0.1:$server_port; second listener 127.0.0.1:$faulty_proxy_port to 127.0.0.1:$faulty_port" >&2
# In the background, so that a signal to this script ends the soak at once.
"$loadgen" soak --target "127.0.0.1:$proxy_port" --server "127.0.0.1:$server_port" \
  --requests "$requests" --connections "$connections" --pipeline "$pipeline" --seed "$seed" \
  --source 127.0.0.11 --reader-source 127.0.0.12 \
  --upstream-fault-target "127.0.0.1:$faulty_proxy_port" >"$tmp/summary" &
driver=$!
pids+=($driver)
status=0
wait "$driver" || status=$?
kill "$churn_pid" "$upstream_pid"
wait "$churn_pid" "$upstream_pid" 2>/dev/null || true
summary=$(cat "$tmp/summary")

count() {
  grep -c "^$1\$" "$2" || true
}
agent_state=alive
kill -0 "$agent" 2>/dev/null || { agent_state=dead; status=1; }
panics=$(cli metrics list | awk '$1 == "axoneme_parser_panics_total" { print $2 }')
[ "${panics:-0}" = 0 ] || status=1
churn_failed=$(count failed "$tmp/churn.log")
[ "$churn_failed" = 0 ] || { status=1; echo "soak: $churn_failed policy changes failed" >&2; }
echo "${summary:-soak FAILED: the driver printed no summary}; policy churn $(grep -cv '^failed$' "$tmp/churn.log" || true)" \
  "(edits $(count edit "$tmp/churn.log"), renames $(count rename "$tmp/churn.log"), imports" \
  "$(count import "$tmp/churn.log"), deletes $(count delete "$tmp/churn.log"), SIGHUPs" \
  "$(count sighup "$tmp/churn.log"), failed $churn_failed; policy revision $first_revision ->" \
  "$(revision)); upstream kills $(count kill "$tmp/upstream.log"), stalls" \
  "$(count stall "$tmp/upstream.log"); agent $agent_state, parser panics ${panics:-unknown}"
exit "$status"

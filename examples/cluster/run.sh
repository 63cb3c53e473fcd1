#!/usr/bin/env bash
# A three-node Axoneme cluster on one machine: three network namespaces (node-a, node-b,
# node-c) joined by a bridge, a three-member etcd on the bridge, one agent per node, and a real
# memcached on node-a guarded by node-a's agent. Fleet maintenance lives on node-b, fleet
# monitoring and a stormtrooper on node-c: node-a knows who they are from the endpoints node-b
# and node-c publish in etcd. The Rebels' fleet policy is imported through node-c and enforced
# on node-a.
#
# Then each fault can be injected from a menu (or all in turn with --check): one etcd member
# stopped, two stopped (quorum lost), node-c's link cut, etcd's data wiped, node-a killed with
# SIGKILL and restarted. Everything is removed on exit.
#
# Needs root, iproute2, etcd and etcdctl (Debian: etcd-server, etcd-client), memcached, python3.
# --check: run every fault with checks and exit (0 when all hold).
# AXONEME_BIN: use this binary instead of building. AXONEME_CLUSTER_SUBNET: the /24 to use
# (default 10.99.0).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
check=false
[ "${1:-}" = "--check" ] && check=true

[ "$(id -u)" = 0 ] || { echo "run as root: namespaces and a bridge are created" >&2; exit 1; }
for tool in ip etcd etcdctl memcached python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
subnet=${AXONEME_CLUSTER_SUBNET:-10.99.0}
if ip -4 route show table all | grep -q "${subnet//./\\.}\."; then
  echo "$subnet.0/24 is already routed on this host; choose another with AXONEME_CLUSTER_SUBNET" >&2
  exit 1
fi

if [ -z "${AXONEME_BIN:-}" ]; then
  echo "building axoneme (release)..."
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p axoneme
  AXONEME_BIN="$root/target/release/axoneme"
fi
# The agents start in their own directories: a relative path must not depend on it.
AXONEME_BIN=$(realpath "$AXONEME_BIN")
[ -x "$AXONEME_BIN" ] || { echo "AXONEME_BIN: $AXONEME_BIN is not an executable" >&2; exit 1; }

nodes=(a b c)
declare -A node_ip=([a]=$subnet.11 [b]=$subnet.12 [c]=$subnet.13)
stormtrooper_ip=$subnet.66
host_ip=$subnet.1
tag=$$
bridge=axc$tag
work=$(mktemp -d /tmp/axoneme-cluster.XXXXXX)
client_ports=(2379 22379 32379)
peer_ports=(2380 22380 32380)
declare -A pids=()

ns() { echo "axoneme-cluster-$tag-node-$1"; }

cleanup() {
  set +e
  for name in "${!pids[@]}"; do kill -9 "${pids[$name]}" 2>/dev/null; done
  wait 2>/dev/null
  for node in "${nodes[@]}"; do ip netns del "$(ns "$node")" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (up to $1 seconds) until the rest of the line succeeds.
wait_for() {
  local seconds=$1
  shift
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gave up waiting for: $*" >&2
  exit 1
}

echo "network: bridge $bridge ($host_ip), namespaces $(ns a), $(ns b), $(ns c)"
ip link add "$bridge" type bridge
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up
for node in "${nodes[@]}"; do
  ip netns add "$(ns "$node")"
  ip link add "axc$tag$node" type veth peer name eth0 netns "$(ns "$node")"
  ip link set "axc$tag$node" master "$bridge" up
  ip -n "$(ns "$node")" addr add "${node_ip[$node]}/24" dev eth0
  ip -n "$(ns "$node")" link set eth0 up
  ip -n "$(ns "$node")" link set lo up
done
ip -n "$(ns c)" addr add "$stormtrooper_ip/24" dev eth0

# etcd: three members on the bridge's address, their data in $work/etcd.
etcd_endpoints=""
initial_cluster=""
for i in 0 1 2; do
  etcd_endpoints+="${etcd_endpoints:+,}http://$host_ip:${client_ports[$i]}"
  initial_cluster+="${initial_cluster:+,}m$i=http://$host_ip:${peer_ports[$i]}"
done
mkdir -p "$work/etcd"
start_member() {
  local i=$1
  etcd --name "m$i" --data-dir "$work/etcd/m$i" \
    --listen-client-urls "http://$host_ip:${client_ports[$i]}" \
    --advertise-client-urls "http://$host_ip:${client_ports[$i]}" \
    --listen-peer-urls "http://$host_ip:${peer_ports[$i]}" \
    --initial-advertise-peer-urls "http://$host_ip:${peer_ports[$i]}" \
    --initial-cluster "$initial_cluster" --initial-cluster-token "axoneme-example-$tag" \
    --initial-cluster-state new --logger zap --log-level warn >>"$work/etcd/m$i.log" 2>&1 &
  pids[etcd$i]=$!
}
stop_member() {
  kill -9 "${pids[etcd$1]}" 2>/dev/null || true
  wait "${pids[etcd$1]}" 2>/dev/null || true
  unset "pids[etcd$1]"
}
etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" "$@"; }
etcd_healthy() { etcdctl_ --dial-timeout 1s --command-timeout 2s endpoint health; }
for i in 0 1 2; do start_member "$i"; done
wait_for 30 etcd_healthy
echo "etcd: $etcd_endpoints"

memcached_args=(-l 127.0.0.1 -p 11211 -U 0 -u root)
ip netns exec "$(ns a)" memcached "${memcached_args[@]}" &
pids[memcached]=$!

# The agents: each node's endpoints, node-a's listener in front of memcached.
endpoints_of() {
  case $1 in
    a) echo "  - {name: memcached, ips: [\"${node_ip[a]}\"], labels: {app: memcached}}" ;;
    b) echo "  - {name: maintenance, ips: [\"${node_ip[b]}\"], labels: {function: fleet-maintenance}}" ;;
    c) echo "  - {name: monitoring, ips: [\"${node_ip[c]}\"], labels: {function: fleet-monitoring}}"
       echo "  - {name: stormtrooper, ips: [\"$stormtrooper_ip\"], labels: {app: empire}}" ;;
  esac
}
for node in "${nodes[@]}"; do
  mkdir -p "$work/node-$node"
  {
    echo "accessLog: {path: access.log}"
    echo "api: {socket: api.sock}"
    echo "endpoints:"
    endpoints_of "$node"
    echo "policies: []"
    if [ "$node" = a ]; then
      echo "listeners:"
      echo "  - {name: memcached, listen: \"${node_ip[a]}:11212\", upstream: \"127.0.0.1:11211\", endpoint: memcached, direction: ingress}"
    else
      echo "listeners: []"
    fi
    echo "cluster:"
    echo "  name: galaxy"
    echo "  node: node-$node"
    echo "  kvstore: {endpoints: [\"${etcd_endpoints//,/\", \"}\"]}"
    echo "  leaseTTL: 5s"
  } >"$work/node-$node/config.yaml"
done
axoneme() { "$AXONEME_BIN" --api "$work/node-$1/api.sock" "${@:2}"; }
start_agent() {
  (cd "$work/node-$1" && exec ip netns exec "$(ns "$1")" "$AXONEME_BIN" run --config config.yaml) \
    >>"$work/node-$1/agent.log" 2>&1 &
  pids[agent$1]=$!
  wait_for 20 axoneme "$1" status
}
for node in "${nodes[@]}"; do start_agent "$node"; done
echo "agents: node-a, node-b, node-c (logs and API sockets in $work/node-*)"

# A client on node $1 from address $2 sends memcached commands to node-a's listener.
client() {
  local node=$1 from=$2
  shift 2
  ip netns exec "$(ns "$node")" python3 "$root/examples/memcached/client.py" \
    --from "$from" --to "${node_ip[a]}:11212" "$@" 2>/dev/null ||
    echo "  (no connection to node-a's listener)"
}
maintenance() { client b "${node_ip[b]}" "$@"; }
monitoring() { client c "${node_ip[c]}" "$@"; }
stormtrooper() { client c "$stormtrooper_ip" "$@"; }
# What memcached itself holds for key $1, asked on node-a without the proxy.
memcached_holds() {
  ip netns exec "$(ns a)" python3 "$root/examples/memcached/client.py" \
    --from 127.0.0.1 --to 127.0.0.1:11211 "get $1"
}
# Succeeds once node $1's agent answers that it holds no policy named $2.
lacks_policy() {
  local answer
  answer=$(axoneme "$1" policy get "$2" 2>&1) && return 1
  [[ $answer == *"no policy is named \"$2\""* ]]
}
stale() {
  axoneme "$1" cluster status -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["stale"])'
}
wait_stale() {
  local node=$1 want=$2
  for _ in $(seq 300); do
    [ "$(stale "$node")" = "$want" ] && return 0
    sleep 0.1
  done
  echo "node-$node: stale is not $want after 30 s" >&2
  exit 1
}

failures=0
# In --check mode, fails the run unless $2 (an output) contains $1.
expect() {
  if $check && [[ "$2" != *"$1"* ]]; then
    echo "CHECK FAILED: expected \"$1\" in:" >&2
    echo "$2" >&2
    failures=$((failures + 1))
  fi
}
# Runs client function $1 with the commands among the pairs that follow ("command" "reply"),
# prints what it got, and in --check mode checks that the n-th line shows the n-th reply.
ask() {
  local who=$1 commands=() replies=()
  shift
  while [ $# -gt 0 ]; do
    commands+=("$1")
    replies+=("$2")
    shift 2
  done
  local output lines i
  output=$("$who" "${commands[@]}")
  echo "$output"
  mapfile -t lines <<<"$output"
  for i in "${!replies[@]}"; do expect "${replies[$i]}" "${lines[$i]:-}"; done
}
status_line() {
  for node in "${nodes[@]}"; do
    printf "  node-%s: stale=%s\n" "$node" "$(stale "$node")"
  done
}
# The requests every step repeats: what the policy allows still passes, what it denies never
# reaches memcached.
enforced() {
  ask maintenance "set alliance/fleet/x-wing red-five" "-> STORED" \
    "set empire/deathstar stolen" "-> CLIENT_ERROR access denied"
  ask monitoring "get alliance/fleet/x-wing" "red-five | END" \
    "set alliance/fleet/x-wing scrap" "-> CLIENT_ERROR access denied"
  echo "memcached itself, asked directly on node-a:"
  ask memcached_holds "empire/deathstar" "-> END"
}

echo
echo "== The fleet policy, imported through node-c, enforced on node-a"
axoneme c policy import "$here/policy.yaml" >/dev/null
wait_for 10 axoneme a policy get secure-fleet
echo "node-a enforces it; every node lists it:"
axoneme a policy get | sed 's/^/  /'
echo "fleet maintenance on node-b (${node_ip[b]}, function=fleet-maintenance) may write and read"
echo "the fleet's keys; fleet monitoring on node-c (${node_ip[c]}, function=fleet-monitoring) may"
echo "only read them; a denied set never reaches memcached:"
enforced
echo "a stormtrooper on node-c ($stormtrooper_ip, app=empire): no policy lets it in"
ask stormtrooper "get alliance/fleet/x-wing" "connection closed by the proxy"
echo "node-a's flows (axoneme observe): the clients are named from the endpoints node-b and"
echo "node-c published in etcd, with the identity numbers the cluster shares:"
flows=$(axoneme a observe --last 20 --utc)
echo "$flows" | sed 's/^/  /'
expect "default/maintenance (" "$flows"
expect "default/stormtrooper (" "$flows"

step_one_member() {
  echo
  echo "== Fault: etcd member m0 stopped (two of three still form a quorum): no effect"
  stop_member 0
  axoneme b policy import "$here/repairs.yaml" >/dev/null
  # node-a's watch may have been on m0: it resumes on another member, from where it stopped.
  wait_for 10 axoneme a policy get repairs
  echo "repairs imported through node-b, enforced on node-a:"
  ask monitoring "set alliance/repairs/r2-d2 fixed" "-> STORED"
  enforced
  start_member 0
  wait_for 30 etcd_healthy
}

step_quorum_lost() {
  echo
  echo "== Fault: members m1 and m2 stopped: no quorum. Every node keeps enforcing, says it is stale"
  stop_member 1
  stop_member 2
  for node in "${nodes[@]}"; do wait_stale "$node" True; done
  local status
  status=$(status_line)
  echo "$status"
  expect "node-a: stale=True" "$status"
  enforced
  echo "a policy change through node-b is refused:"
  local refused
  refused=$(axoneme b policy delete repairs 2>&1 || true)
  echo "  $refused"
  expect "the kvstore has not answered since" "$refused"
  echo "== Quorum back: the nodes converge, changes flow again"
  start_member 1
  start_member 2
  wait_for 30 etcd_healthy
  for node in "${nodes[@]}"; do wait_stale "$node" False; done
  axoneme b policy delete repairs >/dev/null || true
  wait_for 10 lacks_policy a repairs
  ask monitoring "set alliance/repairs/r2-d2 fixed" "-> CLIENT_ERROR access denied"
}

step_cut_link() {
  echo
  echo "== Fault: node-c's link cut. node-c keeps its last state and says it is stale;"
  echo "   its clients cannot reach node-a; its endpoints expire from etcd after the lease (5 s)"
  ip link set "axc${tag}c" down
  wait_stale c True
  axoneme a policy import "$here/repairs.yaml" >/dev/null
  echo "repairs imported through node-a while node-c is away"
  ask monitoring "get alliance/fleet/x-wing" "(no connection to node-a's listener)"
  sleep 6
  echo "== Link back: node-c publishes its endpoints again and applies what it missed"
  ip link set "axc${tag}c" up
  wait_stale c False
  wait_for 10 axoneme c policy get repairs
  wait_for 20 bash -c "ETCDCTL_API=3 etcdctl --endpoints $etcd_endpoints get --prefix --keys-only axoneme/galaxy/endpoints/node-c/ | grep -q monitoring"
  sleep 1
  ask monitoring "set alliance/repairs/r2-d2 fixed" "-> STORED"
  enforced
}

step_wipe() {
  echo
  echo "== Fault: etcd loses all its data (stopped, wiped, restarted empty)"
  for i in 0 1 2; do stop_member "$i"; done
  rm -rf "$work/etcd/m0" "$work/etcd/m1" "$work/etcd/m2"
  for i in 0 1 2; do start_member "$i"; done
  wait_for 30 etcd_healthy
  for node in "${nodes[@]}"; do wait_stale "$node" False; done
  wait_for 20 bash -c "ETCDCTL_API=3 etcdctl --endpoints $etcd_endpoints get --prefix --keys-only axoneme/galaxy/ | grep -q endpoints/node-c/"
  echo "every node re-created what it owns; the policies came back from the nodes:"
  local keys
  keys=$(etcdctl_ get --prefix --keys-only axoneme/galaxy/ | grep -E 'endpoints|policies' | sed 's/^/  /')
  echo "$keys"
  expect "axoneme/galaxy/policies/secure-fleet" "$keys"
  expect "axoneme/galaxy/endpoints/node-b/maintenance" "$keys"
  enforced
}

# The identity numbers node-a's endpoints have, and the cluster's numbers in etcd.
identity_numbers() {
  axoneme a endpoint list -o json |
    python3 -c 'import json, sys; print(" ".join("%s=%s" % (e["name"], e["identity"]) for e in json.load(sys.stdin)))'
  etcdctl_ get --prefix axoneme/galaxy/identities/id/ | paste -d ' ' - - | sed 's|axoneme/galaxy/identities/id/||'
}

step_kill_agent() {
  echo
  echo "== Fault: node-a's agent killed (SIGKILL) and restarted: the same identity numbers"
  local before after
  before=$(identity_numbers)
  { kill -9 "${pids[agenta]}" && wait "${pids[agenta]}"; } 2>/dev/null || true
  rm -f "$work/node-a/api.sock"
  start_agent a
  after=$(identity_numbers)
  echo "before:"
  echo "$before" | sed 's/^/  /'
  echo "after:"
  echo "$after" | sed 's/^/  /'
  expect "$before" "$after"
  expect "memcached=" "$after"
  enforced
}

if $check; then
  step_one_member
  step_quorum_lost
  step_cut_link
  step_wipe
  step_kill_agent
  echo
  if [ "$failures" -ne 0 ]; then
    echo "$failures checks failed" >&2
    exit 1
  fi
  echo "all checks passed"
  exit 0
fi

echo
echo "Try a client yourself:"
echo "  ip netns exec $(ns b) python3 $root/examples/memcached/client.py --from ${node_ip[b]} --to ${node_ip[a]}:11212 'get alliance/fleet/x-wing'"
echo "  $AXONEME_BIN --api $work/node-a/api.sock cluster status"
echo "  $AXONEME_BIN --api $work/node-a/api.sock observe --follow"
while true; do
  echo
  echo "Inject a fault: 1) stop one etcd member  2) lose the quorum  3) cut node-c's link"
  echo "                4) wipe etcd  5) kill node-a's agent  s) cluster status  q) quit"
  read -r -p "> " choice || break
  case $choice in
    1) step_one_member ;;
    2) step_quorum_lost ;;
    3) step_cut_link ;;
    4) step_wipe ;;
    5) step_kill_agent ;;
    s) axoneme a cluster status ;;
    q) break ;;
  esac
done

# Shared by per-node.sh and sidecar.sh: builds hosts c1 (luke, 10.71.1.2), c2 (vader,
# 10.71.2.2) and srv (cache, 10.71.3.2, running memcached), each linked to the namespace node,
# which routes between them; IPv6 fd71:N::2 alongside. Everything is removed on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
axoneme=${AXONEME_BIN:-$root/target/debug/axoneme}
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
[ -x "$axoneme" ] || { echo "build first: cargo build -p axoneme" >&2; exit 1; }
prefix=axdemo$$
dir=$(mktemp -d)
ns() { echo "$prefix-$1"; }
on() { local host=$1; shift; ip netns exec "$(ns "$host")" "$@"; }
cleanup() {
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for host in node c1 c2 srv; do ip netns del "$(ns "$host")" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
for host in node c1 c2 srv; do ip netns add "$(ns "$host")"; on "$host" ip link set lo up; done
on node sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
n=1
for host in c1 c2 srv; do
  on node ip link add "$host" type veth peer name eth0 netns "$(ns "$host")"
  on node ip addr add "10.71.$n.1/24" dev "$host"
  on node ip -6 addr add "fd71:$n::1/64" dev "$host" nodad
  on node ip link set "$host" up
  on "$host" ip addr add "10.71.$n.2/24" dev eth0
  on "$host" ip -6 addr add "fd71:$n::2/64" dev eth0 nodad
  on "$host" ip link set eth0 up
  on "$host" ip route add default via "10.71.$n.1"
  on "$host" ip -6 route add default via "fd71:$n::1"
  n=$((n + 1))
done
on srv memcached -u root -p 11211 -U 0 &
sleep 0.5

endpoints='endpoints:
  - {name: cache, ips: ["10.71.3.2", "fd71:3::2"], labels: {app: cache}}
  - {name: luke, ips: ["10.71.1.2", "fd71:1::2"], labels: {app: luke}}
  - {name: vader, ips: ["10.71.2.2", "fd71:2::2"], labels: {app: vader}}'

# Sends memcached requests from a host to ADDRESS PORT and prints the replies.
say() {
  local host=$1 address=$2 request=$3
  echo "$host -> $address:11211: $(printf '%s' "$request" | head -1)"
  on "$host" python3 -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], 11211), timeout=3)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode())
time.sleep(0.3)
print("   ", s.recv(4096).decode().replace("\r\n", "\\r\\n "))' "$address" "$request"
}

# Starts the agent in HOST with the configuration on stdin; waits for its rules.
start_agent() {
  local host=$1
  cat >"$dir/config.yaml"
  on "$host" "$axoneme" run --config "$dir/config.yaml" &
  for _ in $(seq 100); do on "$host" nft list table inet axoneme >/dev/null 2>&1 && return; sleep 0.1; done
  echo "the agent did not install its rules" >&2; exit 1
}

#!/usr/bin/env bash
# The memcached demo: starts memcached and Axoneme in front of it with the Rebels' fleet policy,
# shows what fleet maintenance, fleet monitoring and a Jedi may and may not do and a refused
# stormtrooper, prints the access log, then keeps running until Ctrl-C.
# --once: stop after the scripted conversation. AXONEME_BIN: use this binary instead of building.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
once=false
[ "${1:-}" = "--once" ] && once=true

command -v memcached >/dev/null || {
  echo "memcached is not installed (Debian/Ubuntu: apt-get install memcached)" >&2
  exit 1
}
# Succeeds when something accepts connections on 127.0.0.1:$1.
port_open() {
  python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', $1), 0.2).close()" 2>/dev/null
}
for port in 11211 11212; do
  if port_open "$port"; then
    echo "127.0.0.1:$port is already in use (a system memcached? stop it first)" >&2
    exit 1
  fi
done

if [ -z "${AXONEME_BIN:-}" ]; then
  echo "building axoneme (release)..."
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p axoneme
  AXONEME_BIN="$root/target/release/axoneme"
fi

log=$(mktemp)
errors=$(mktemp)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -f "$log" "$errors"
}
trap cleanup EXIT INT TERM

memcached_args=(-l 127.0.0.1 -p 11211 -U 0)
# memcached refuses to run as root unless told which user to be.
[ "$(id -u)" = 0 ] && memcached_args+=(-u root)
memcached "${memcached_args[@]}" &
pids+=($!)
"$AXONEME_BIN" run --config "$here/config.yaml" >"$log" 2>"$errors" &
pids+=($!)

# Waits until $1 succeeds, for up to 10 seconds.
wait_for() {
  for _ in $(seq 100); do
    "$@" && return 0
    sleep 0.1
  done
  echo "gave up waiting for: $*; the proxy said:" >&2
  cat "$errors" >&2
  exit 1
}
wait_for port_open 11211
wait_for grep -q "listening" "$errors"

client() {
  python3 "$here/client.py" "$@"
}

echo
echo "Fleet maintenance (127.0.0.11, function=fleet-maintenance): writeGroup and get on alliance/fleet/*"
client --from 127.0.0.11 "set alliance/fleet/x-wing red-five" "get alliance/fleet/x-wing" \
  "set empire/deathstar stolen" "flush_all"
echo
echo "Fleet monitoring (127.0.0.12, function=fleet-monitoring): get on alliance/fleet/*"
client --from 127.0.0.12 "get alliance/fleet/x-wing" "set alliance/fleet/x-wing scrap" \
  "delete alliance/fleet/x-wing" "get alliance/fleet/x-wing empire/deathstar"
echo
echo "A Jedi (127.0.0.13, role=jedi): everything"
client --from 127.0.0.13 "set empire/deathstar exhaust-port" "get empire/deathstar" \
  "delete alliance/fleet/x-wing"
echo
echo "A stormtrooper (127.0.0.66, app=empire): no policy lets it reach memcached"
client --from 127.0.0.66 "get alliance/fleet/x-wing"
# The log is written off the forwarding path: wait for the entry of each of the 12 requests.
log_complete() {
  [ "$(wc -l <"$log")" -ge 12 ]
}
wait_for log_complete
echo
echo "Access log:"
cat "$log"

if ! $once; then
  echo
  echo "Axoneme listens on 127.0.0.1:11212 in front of memcached on 127.0.0.1:11211. Try:"
  echo "  python3 $here/client.py --from 127.0.0.12 'get alliance/fleet/x-wing'"
  echo "Ctrl-C stops the demo."
  tail -n 0 -f "$log" "$errors" &
  pids+=($!)
  wait "${pids[1]}"
fi

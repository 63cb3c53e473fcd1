#!/usr/bin/env bash
# The R2-D2 demo: starts the R2-D2 server and Axoneme in front of it, shows an allowed and a denied
# request for Luke and a refused connection for Vader, then keeps running until Ctrl-C.
# --once: stop after the scripted conversation. AXONEME_BIN: use this binary instead of building.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
once=false
[ "${1:-}" = "--once" ] && once=true

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

python3 "$here/upstream.py" --listen 127.0.0.1:4001 &
pids+=($!)
"$AXONEME_BIN" run --config "$here/config.yaml" >"$log" 2>"$errors" &
pids+=($!)

# Waits until a line matching $2 appears in file $1 (the server says it is listening).
wait_for() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "gave up waiting for '$2'; the proxy said:" >&2
  cat "$errors" >&2
  exit 1
}
wait_for "$errors" "listening"
python3 -c "
import socket, time
for _ in range(100):
    try:
        socket.create_connection(('127.0.0.1', 4001), 0.2).close(); break
    except OSError:
        time.sleep(0.1)
"

echo
echo "Luke (127.0.0.21, app=luke):"
python3 "$here/client.py" --from 127.0.0.21 "READ /public/plans" "READ /secret/deathstar" "WRITE /public/plans" "HALT"
echo
echo "Vader (127.0.0.66, app=vader):"
python3 "$here/client.py" --from 127.0.0.66 "READ /public/plans"
sleep 0.3
echo
echo "Access log:"
cat "$log"

if ! $once; then
  echo
  echo "Axoneme listens on 127.0.0.1:4000. Try:"
  echo "  python3 $here/client.py --from 127.0.0.21 'READ /public/maps'"
  echo "Ctrl-C stops the demo."
  tail -n 0 -f "$log" "$errors" &
  pids+=($!)
  wait "${pids[1]}"
fi

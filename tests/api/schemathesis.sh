#!/usr/bin/env bash
# Runs schemathesis against a live agent's API, generating requests from the OpenAPI document,
# and fails if any request gets a server error. Usage: schemathesis.sh SCHEMATHESIS AXONEME_BIN
set -euo pipefail
schemathesis=$(realpath "$1")
axoneme=$(realpath "$2")
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
token=schemathesis-$RANDOM$RANDOM
cat >"$dir/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: from-file}
spec:
  endpointSelector: {matchLabels: {app: r2d2}}
  ingress: [{toPorts: [{ports: [{port: "4001"}], rules: {l7proto: r2d2, l7: [{cmd: HALT}]}}]}]
YAML
cat >"$dir/config.yaml" <<YAML
api: {socket: api.sock, listen: "127.0.0.1:$api_port", token: "$token"}
drainTimeout: 1
endpoints:
  - {name: r2d2, ips: ["127.0.0.1"], labels: {app: r2d2}}
policies: [policy.yaml]
listeners:
  - {name: r2d2, listen: "127.0.0.1:0", upstream: "127.0.0.1:4001", endpoint: r2d2, direction: ingress}
YAML
"$axoneme" run --config "$dir/config.yaml" 2>"$dir/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$dir"' EXIT
status=0
# schemathesis keeps its state in the working directory: the temporary one.
cd "$dir"
"$schemathesis" run "http://127.0.0.1:$api_port/v1/openapi.json" \
  --wait-for-schema 15 \
  --header "Authorization: Bearer $token" \
  --checks ${SCHEMATHESIS_CHECKS:-not_a_server_error} \
  --exclude-path /v1/monitor \
  --max-examples 25 \
  --workers 1 || status=$?
if [ "$status" != 0 ]; then
  echo "agent log:" >&2
  tail -n 50 "$dir/agent.log" >&2
fi
exit "$status"

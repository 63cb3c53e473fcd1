#!/usr/bin/env bash
# Per-node deployment: the agent runs on the node namespace with TPROXY listeners guarding every
# endpoint's ingress and egress. cache's ingress lets luke set and get alliance/ keys and vader
# only get them; vader's own egress lets it get only empire/ keys, so both ends must allow and
# vader's get of alliance/plans is denied by its egress. memcached sees the clients' own
# addresses. See README.md.
source "$(dirname "$0")/common.sh"
cat >"$dir/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cache-ingress}
spec:
  endpointSelector: {matchLabels: {app: cache}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: luke}}]
      toPorts: [{ports: [{port: "11211"}], rules: {l7proto: memcache, l7: [{command: set, keyPrefix: alliance/}, {command: get, keyPrefix: alliance/}, {command: stats}]}}]
    - fromEndpoints: [{matchLabels: {app: vader}}]
      toPorts: [{ports: [{port: "11211"}], rules: {l7proto: memcache, l7: [{command: get, keyPrefix: alliance/}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: vader-egress}
spec:
  endpointSelector: {matchLabels: {app: vader}}
  egress:
    - toEndpoints: [{matchLabels: {app: cache}}]
      toPorts: [{ports: [{port: "11211"}], rules: {l7proto: memcache, l7: [{command: get, keyPrefix: empire/}]}}]
YAML
start_agent node <<YAML
api: {socket: $dir/api.sock}
accessLog: {path: "-"}
drainTimeout: 1
redirect: {manage: true}
$endpoints
policies: [policy.yaml]
listeners:
  - {name: node-in, listen: "[::]:15001", mode: tproxy, direction: ingress, keepClientAddress: true}
  - {name: node-out, listen: "[::]:15002", mode: tproxy, direction: egress, keepClientAddress: true}
YAML
"$axoneme" --api "$dir/api.sock" redirect list
say c1 10.71.3.2 'set alliance/plans 0 0 5\r\nr2-d2\r\n'
say c1 fd71:3::2 'stats conns\r\n'
say c2 10.71.3.2 'set alliance/plans 0 0 4\r\ndark\r\n'
say c2 fd71:3::2 'get alliance/plans\r\n'
say c2 10.71.3.2 'get empire/plans\r\n'
echo "the flows, as the agent saw them:"
"$axoneme" --api "$dir/api.sock" observe --last 20 --utc
echo "watch new ones: $axoneme --api $dir/api.sock observe --follow"
echo "running; the rules: ip netns exec $(ns node) nft list table inet axoneme. Ctrl-C stops."
wait

#!/usr/bin/env bash
# Sidecar deployment: the agent runs inside luke's namespace with a REDIRECT listener guarding
# luke's egress; luke may only get alliance/ keys from cache. vader has no sidecar. See
# README.md.
source "$(dirname "$0")/common.sh"
cat >"$dir/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: luke-egress}
spec:
  endpointSelector: {matchLabels: {app: luke}}
  egress:
    - toEndpoints: [{matchLabels: {app: cache}}]
      toPorts: [{ports: [{port: "11211"}], rules: {l7proto: memcache, l7: [{command: get, keyPrefix: alliance/}]}}]
YAML
start_agent c1 <<YAML
api: {socket: $dir/api.sock}
accessLog: {path: "-"}
drainTimeout: 1
redirect: {manage: true}
$endpoints
policies: [policy.yaml]
listeners:
  - {name: luke-out, listen: "[::]:15002", mode: redirect, endpoint: luke, direction: egress}
YAML
"$axoneme" --api "$dir/api.sock" redirect list
say c2 10.71.3.2 'set alliance/base 0 0 4\r\nhoth\r\n'
say c1 10.71.3.2 'get alliance/base\r\n'
say c1 fd71:3::2 'set alliance/base 0 0 4\r\nfarm\r\n'
echo "the flows, as the agent saw them:"
"$axoneme" --api "$dir/api.sock" observe --last 20 --utc
echo "watch new ones: $axoneme --api $dir/api.sock observe --follow"
echo "running; the rules: ip netns exec $(ns c1) nft list table inet axoneme. Ctrl-C stops."
wait

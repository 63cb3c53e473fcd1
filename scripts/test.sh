#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need, checks
# formatting, then builds and runs all unit, property, integration and bench-smoke tests.
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

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi

# Runs a test suite, keeping its output to count what passed and failed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^passed;?$/) n += $(i - 1) } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^failed;?$/) n += $(i - 1) } END { print n + 0 }' "$log")

echo
echo "total: $passed passed, $failed failed"
exit "$cargo_status"

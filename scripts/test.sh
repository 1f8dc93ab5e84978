#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up (packages), formatting, lints, then every test.
# Runs as root: tests mount overlays, create namespaces and cgroups, and run containers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
# Build everything first so test timeouts never include compilation.
cargo build --workspace --all-targets --locked
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi

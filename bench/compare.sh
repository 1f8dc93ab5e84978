#!/usr/bin/env bash
# The benchmark suite's entry point: installs what it needs (Debian's containerd, runc,
# docker-registry: scripts/setup.sh), then runs bench/compare.py (every figure, both daemons,
# one table, bench/RESULTS.md). Run as root from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
exec python3 bench/compare.py "$@"

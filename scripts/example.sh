#!/usr/bin/env bash
# The README's first command: installs what is missing, builds (release) and runs the main example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target tied_tiny
./build/release/examples/tied_tiny "$@"

#!/usr/bin/env bash
# The README's first command: installs what is missing, builds (release) and runs the main example,
# examples/recommend.cpp (docs/examples/recommend.md). Extra arguments go to the program
# (try --help); its loss.csv and loss.svg land in build/release/example-output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target recommend
./build/release/examples/recommend --out build/release/example-output "$@"

#!/usr/bin/env bash
# Builds the release preset and runs the embedding benchmark: hitch and PyTorch side by side
# (scripts/bench_pytorch.py with Debian's /usr/bin/python3 and python3-torch), at 1 and 2
# threads, with the ratio table at the end. Extra arguments go to bench_embedding
# (e.g. --only B/ or --malloc-tuned). See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target bench_embedding
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "bench.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); running hitch only" >&2
  set -- --no-torch "$@"
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
./build/release/examples/bench_embedding --script scripts/bench_pytorch.py "$@"

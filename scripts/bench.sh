#!/usr/bin/env bash
# Benchmarks pneumo's default network against a PyTorch reference of the same network on this
# machine: training and inference throughput, single-image latency of `predict`, training peak
# memory and achieved GFLOP/s against the machine's SGEMM peak. Prints one table (medians, and
# pneumo / PyTorch ratios) and saves the raw JSON under bench/results/. See docs/benchmark.md.
#
#   scripts/bench.sh [ARGS...]   e.g. --runs 3 --threads 2 --engines burn,native --image x.jpeg
#
# ARGS go to bench/compare.py (`python3 bench/compare.py --help` lists them). Needs python3 with
# torch, numpy and pillow. Run it on a quiet machine: anything else on the cores skews both
# sides.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import torch, numpy, PIL' 2>/dev/null; then
  echo "error: python3 cannot import torch, numpy and pillow (pip install torch numpy pillow)" >&2
  exit 1
fi

cargo build --release --bin pneumo
cargo bench --bench throughput --no-run
bench_exe=$(cargo bench --bench throughput --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "throughput" \
            and message.get("executable"):
        print(message["executable"])
')
if [[ -z "$bench_exe" ]]; then
  echo "error: could not find the throughput bench executable" >&2
  exit 1
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="bench/results/$(date +%Y-%m-%d_%H%M%S).json"
python3 bench/compare.py --bench-exe "$bench_exe" --pneumo "$target_dir/release/pneumo" \
  --work "$target_dir/bench" --out "$out" "$@"

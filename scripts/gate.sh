#!/usr/bin/env bash
# The data gate: evaluates the built-in model on the child-grouped validation split recorded in
# its card and fails below validation AUC 0.97.
#
#   scripts/gate.sh DATA_DIR [MIN_AUC]
set -euo pipefail
data=${1:?usage: gate.sh DATA_DIR [MIN_AUC]}
min_auc=${2:-0.97}
bin=${PNEUMO:-target/release/pneumo}

result=$("$bin" evaluate "$data" --split validation --json)
echo "$result"
python3 - "$result" "$min_auc" <<'PY'
import json, sys
metrics = json.loads(sys.argv[1])
minimum = float(sys.argv[2])
print(f"validation AUC {metrics['auc']:.4f} (gate: >= {minimum}) on {metrics['n']} images")
sys.exit(0 if metrics["auc"] >= minimum else 1)
PY

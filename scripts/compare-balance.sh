#!/usr/bin/env bash
# Compares the class-imbalance strategies on the child-grouped validation split: the same seed,
# data and schedule, only `--balance` differs. Prints one line per strategy from its model card.
#
#   scripts/compare-balance.sh DATA_DIR [EPOCHS] [OUT_ROOT]
set -euo pipefail
data=${1:?usage: compare-balance.sh DATA_DIR [EPOCHS] [OUT_ROOT]}
epochs=${2:-5}
root=${3:-runs/balance}
bin=${PNEUMO:-target/release/pneumo}

for balance in class-weights sampling none; do
  "$bin" train "$data" --out "$root/$balance" --epochs "$epochs" --balance "$balance" >/dev/null
done

printf '%-14s %8s %9s %11s %11s %10s\n' balance val_auc accuracy sensitivity specificity best_epoch
for balance in class-weights sampling none; do
  python3 - "$root/$balance/model/card.json" "$balance" <<'PY'
import json, sys
card = json.load(open(sys.argv[1]))
v = card["validation"]
print(f"{sys.argv[2]:<14} {v['auc']:8.4f} {v['accuracy']:9.4f} {v['sensitivity']:11.4f} "
      f"{v['specificity']:11.4f} {card['best_epoch']:>10}")
PY
done

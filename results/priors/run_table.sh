#!/bin/bash
# The papers' table in miniature (RESULTS.md §6): train a queue of runs on one core, then for each
# run the whole evaluation — summary (active units, KL and prior hole per layer, f+ - f- in nats,
# FD of the model's prior, of the same generator's p_beta and of its Recon, gap closed) and a
# 2,500-step long run.  Finished steps are skipped, so a rerun continues.
#   bash results/priors/run_table.sh QUEUE_FILE RUNS_DIR
# QUEUE_FILE lines: NAME<TAB>hebm.train flags (the string @RUNS@ is replaced by RUNS_DIR)
set -u
queue=$1; runs=$2
cd "$(dirname "$0")/../.."; . .venv/bin/activate
mkdir -p "$runs"
while IFS=$'\t' read -r name flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  flags=${flags//@RUNS@/$runs}
  out="$runs/$name"; log="$runs/$name.log"
  if [ ! -f "$out/summary.json" ]; then
    t0=$(date +%s)
    # shellcheck disable=SC2086
    python -m hebm.train $flags --out "$out" --quiet --kernel-threads 1 --overwrite > "$log" 2>&1
    echo "train_wall_s $(( $(date +%s) - t0 ))" >> "$log"
  fi
  [ -f "$out/summary_eval.json" ] || python -m hebm.evaluate --ckpt "$out/ckpt.pt" --json "$out/summary_eval.json" summary --fused >> "$log" 2>&1
  if [ ! -f "$out/sample_longrun.json" ] && ! grep -q '"prior": "gaussian"' "$out/config.json"; then
    python -m hebm.sample --ckpt "$out/ckpt.pt" --long-run 2500 --nchains 64 --fused --out "$out/sample" >> "$log" 2>&1
  fi
done < "$queue"

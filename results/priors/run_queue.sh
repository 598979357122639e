#!/bin/bash
# Run a queue of (name, hebm.train flags) lines one after another on one core, then evaluate each
# run's FD table (model prior, its Gaussian p_β, its Recon floor, gap closed) and summary.
#   bash results/priors/run_queue.sh QUEUE_FILE RUNS_DIR
# QUEUE_FILE lines: NAME<TAB>flags...   (lines starting with # are skipped; a finished run is skipped)
set -u
queue=$1; runs=$2
cd "$(dirname "$0")/../.."; . .venv/bin/activate
mkdir -p "$runs"
while IFS=$'\t' read -r name flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  out="$runs/$name"
  if [ ! -f "$out/fd.json" ]; then
    if [ ! -f "$out/summary.json" ]; then
      t0=$(date +%s)
      # shellcheck disable=SC2086
      python -m hebm.train $flags --out "$out" --quiet --kernel-threads 1 --overwrite > "$runs/$name.log" 2>&1
      echo "train_wall_s $(( $(date +%s) - t0 ))" >> "$runs/$name.log"
    fi
    python -m hebm.evaluate --ckpt "$out/ckpt.pt" --json "$out/fd.json" fd --fused >> "$runs/$name.log" 2>&1
  fi
done < "$queue"

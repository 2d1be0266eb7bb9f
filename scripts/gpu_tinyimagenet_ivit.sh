#!/usr/bin/env bash
# GPU run (issue 4): the two I-ViT rows of scripts/tinyimagenet_short.sh, each capped in time.
# Usage: scripts/gpu_tinyimagenet_ivit.sh DATA_ROOT OUT_DIR EPOCHS
set -uo pipefail
data=$1 out=$2 epochs=$3
export LFI_RUNS_ROOT="$out"  # run folders go under $out (lfi.config.output_roots)
lfi="python3 -m lfi.cli"
weights=$data/weights/deit_tiny_patch16_224.safetensors
$lfi extract --teacher oracle --data "$data" --dataset tinyimagenet --split train --out "$out/store" \
  --grid 14 --batch-size 256 --workers 8 2>&1 | tail -1
common=(model.name=deit_tiny_patch16_224 "model.checkpoint=$weights" "data.root=$data" "output_dir=$out/runs"
  "trainer.max_epochs=$epochs" optim.warmup_epochs=1 data.batch_size=256 data.num_workers=12
  trainer.enable_progress_bar=false teacher.name=oracle "teacher.store=$out/store")
for run in "ivit_frozen" "ivit_full model.freeze_backbone=false"; do
  set -- $run
  start=$(date +%s)
  timeout 270 $lfi train configs/table1/ivit_s.yaml "${common[@]}" "experiment=$1" "${@:2}" 2>&1 | grep -v Warning | tail -3
  echo "$1: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s wall"
done

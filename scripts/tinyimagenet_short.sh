#!/usr/bin/env bash
# Short real-data run (issue 4): ViT vs I-ViT on TinyImageNet from the real ImageNet DeiT-Tiny, few epochs.
# Teacher: oracle (ground-truth boxes), NOT the paper's LLaVA-1.5. Usage:
#   scripts/tinyimagenet_short.sh DATA_ROOT OUT_DIR [EPOCHS]
# DATA_ROOT holds tiny-imagenet-200/*.zip and weights/deit_tiny_patch16_224.safetensors.
set -euo pipefail
data=$1 out=$2 epochs=${3:-10}
export LFI_RUNS_ROOT="$out"  # run folders go under $out (lfi.config.output_roots)
lfi="python3 -m lfi.cli"
weights=$data/weights/deit_tiny_patch16_224.safetensors
$lfi extract --teacher oracle --data "$data" --dataset tinyimagenet --split train --out "$out/store" \
  --grid 14 --batch-size 256 --workers 8
common=(model.name=deit_tiny_patch16_224 "model.checkpoint=$weights" "data.root=$data" "output_dir=$out/runs"
  "trainer.max_epochs=$epochs" optim.warmup_epochs=1 data.batch_size=256 data.num_workers=12
  trainer.enable_progress_bar=false)
oracle=(teacher.name=oracle "teacher.store=$out/store")
# plain ViT, full fine-tune (its standard recipe) and frozen (same trainable budget style as I-ViT)
$lfi train configs/table1/vit_s.yaml "${common[@]}" experiment=vit_full
$lfi train configs/table3/iq_gc.yaml "${common[@]}" model.freeze_backbone=true experiment=ivit_iq_gc_no_constraint
$lfi train configs/table1/ivit_s.yaml "${common[@]}" "${oracle[@]}" experiment=ivit_frozen
$lfi train configs/table1/ivit_s.yaml "${common[@]}" "${oracle[@]}" model.freeze_backbone=false experiment=ivit_full
$lfi report "$out"/runs/* --out "$out/report.md"

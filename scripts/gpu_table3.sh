#!/usr/bin/env bash
# Table 3's five rows on DeiT-Tiny / TinyImageNet with three seeds, on one GPU (issues 18, 22).
# Teacher: the box oracle (ground-truth boxes), NOT the paper's LLaVA-1.5. Usage:
#   scripts/gpu_table3.sh DATA_ROOT OUT_DIR [KEY=VALUE ...]
# DATA_ROOT holds tiny-imagenet-200/*.zip and weights/deit_tiny_patch16_224[.bf16].safetensors. Resumable:
# run it again and finished runs are skipped. Writes OUT_DIR/runs/study/table3/sweep.md.
set -euo pipefail
data=$1 out=$2; shift 2
export LFI_RUNS_ROOT="$out"  # run folders go under $out (lfi.config.output_roots)
lfi="python3 -m lfi.cli"
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
[ -d "$out/store" ] || $lfi extract --teacher oracle --data "$data" --dataset tinyimagenet --split train \
  --out "$out/store" --grid 14 --batch-size 256 --workers 15
common=("data.root=$data" "model.checkpoint=$weights" "teacher.store=$out/store" "output_dir=$out/runs"
  "data.cache_dir=$out/cache" trainer.enable_progress_bar=false data.num_workers=4 "$@")
$lfi prepare configs/study/table3/vit.yaml "${common[@]}"
$lfi sweep configs/study/table3/{vit,iq_gc,ic_original,iq_ic,iq_ic_gc}.yaml "${common[@]}" --seeds 0,1,2 --jobs 3

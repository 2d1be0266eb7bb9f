#!/usr/bin/env bash
# GPU run (issue 5): Conditional DETR-R50 from scratch on the real COCO subset, with and without C_VLM
# (oracle box teacher). Usage: scripts/gpu_coco_tiny.sh COCO_ROOT OUT_DIR [KEY=VALUE ...]
set -uo pipefail
root=$1 out=$2; shift 2
export LFI_RUNS_ROOT="$out"  # run folders go under $out (lfi.config.output_roots)
for row in base cvlm; do
  start=$(date +%s)
  timeout 270 python3 -m lfi.cli train "configs/detection/coco_tiny_$row.yaml" "data.root=$root" \
    "output_dir=$out" "experiment=$row" data.num_workers=8 "$@" 2>&1 | grep -v Warning | tail -3
  echo "$row: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s wall"
done

#!/usr/bin/env bash
# Table 4 on DeiT-Tiny (issue 19): PACS leave-one-domain-out, six rows x four unseen domains x three seeds on one
# GPU. Usage: scripts/gpu_pacs.sh DATA WORK [lfi sweep options and KEY=VALUE ...]
# DATA holds pacs/PACS-112.zip and weights/deit_tiny_patch16_224[.bf16].safetensors. Makes the `vit` teacher's
# maps of the training images (stores/pacs_vit14; DeiT-Tiny relevance, NOT the paper's LLaVA-1.5) and the
# image caches once, then sweeps into WORK/runs (resumable: finished runs are skipped).
# DOMAINS: the unseen domains to run, space-separated (default all four; scripts/gpu_pacs_human.sh runs
# art_painting alone).
set -euo pipefail
data=$1 work=$2; shift 2
read -ra domains <<<"${DOMAINS:-art_painting cartoon photo sketch}"
export LFI_RUNS_ROOT="$work"  # run folders go under $work (lfi.config.output_roots)
lfi="python3 -m lfi.cli"
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
[ -f stores/pacs_vit14/store.json ] || $lfi extract --teacher vit --weights "$weights" --device cuda --data "$data" \
  --dataset pacs --split train --grid 14 --batch-size 256 --workers 15 --out stores/pacs_vit14
common=("data.root=$data" "model.checkpoint=$weights" "output_dir=$work/runs" "data.cache_dir=$work/cache")
for domain in "${domains[@]}"; do
  $lfi prepare configs/study/pacs/base.yaml "${common[@]}" "data.test_domains=[$domain]"
done
swept=$(printf '[%s],' "${domains[@]}")
$lfi sweep configs/study/pacs/{vit_full,probe,iq_gc,ivit_vit,shuffled,centre}.yaml "${common[@]}" \
  --set "data.test_domains=${swept%,}" --seeds 0,1,2 "$@"

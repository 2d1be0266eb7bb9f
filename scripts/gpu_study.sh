#!/usr/bin/env bash
# A study (lfi study) on one GPU, resumable across machines (issue 18). Usage:
#   scripts/gpu_study.sh DATA WORK STUDY_YAML [lfi study options and KEY=VALUE ...]
# DATA holds tiny-imagenet-200/*.zip and weights/ (deit_tiny_patch16_224[.bf16].safetensors,
# imagenet_synset_words.txt). Makes what the rows read, once: the oracle's and the `vit` teacher's maps of the
# training images (stores/tin_train_{oracle,vit}14) and the decoded-image caches (WORK/cache); then trains the
# study into WORK/runs (a finished run is skipped: unpack an earlier call's runs there to go on).
# Teachers: the box oracle and DeiT-Tiny relevance (`vit`), NOT the paper's LLaVA-1.5.
# STUDENT=scratch: the student starts from random weights (its config's model.checkpoint: null), so the
# pretrained weights serve the teachers alone (maps and KD), not the student. PREPARE: the config whose image
# cache is built first (default: base.yaml beside STUDY_YAML).
set -euo pipefail
data=$1 work=$2 study=$3; shift 3
export LFI_RUNS_ROOT="$work"  # run folders go under $work (lfi.config.output_roots)
lfi="python3 -m lfi.cli"
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
extract=(--data "$data" --dataset tinyimagenet --split train --grid 14 --batch-size 256 --workers 15)
[ -f stores/tin_train_oracle14/store.json ] || $lfi extract --teacher oracle "${extract[@]}" --out stores/tin_train_oracle14
[ -f stores/tin_train_vit14/store.json ] || $lfi extract --teacher vit --weights "$weights" --device cuda "${extract[@]}" \
  --out stores/tin_train_vit14
student=("model.checkpoint=$weights")
[ "${STUDENT:-pretrained}" = scratch ] && student=()
common=("data.root=$data" "${student[@]}" "loss.kd.checkpoint=$weights"
  "loss.kd.synsets=$data/weights/imagenet_synset_words.txt" "output_dir=$work/runs" "data.cache_dir=$work/cache")
$lfi prepare "${PREPARE:-$(dirname "$study")/base.yaml}" "${common[@]}"   # the cache of the study's images
$lfi study "$study" "${common[@]}" "$@"

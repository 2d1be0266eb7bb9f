#!/usr/bin/env bash
# Issue 31, the linear probe end to end on one GPU (~4 min, at most 6): the GPU tests of the frozen trunk's CUDA graphs
# (lfi.models.graphs) and of the GPU data path; then, each in its own process and interleaved, the probe's
# 10-epoch fit against its step (FitClock's split, --profile-fit-steps) with this tree, with this tree and
# model.cuda_graphs=false, and with an older tree's code for a same-machine baseline (REPEAT=1: the old and this tree once more) (OLD: a folder holding that
# commit's lfi/, configs/ and benchmarks/{train_throughput,profiling}.py, e.g. `git archive COMMIT lfi configs
# benchmarks/train_throughput.py benchmarks/profiling.py | tar x -C .old`); last, full fine-tuning with this tree.
# Usage, from the repo root:
#   OLD=.old [REPEAT=1] scripts/gpu_probe_graphs.sh DATA   # DATA: tiny-imagenet-200/{train-00,val} zips + weights/ (e.g. .carry)
# Results in $OUT/probe_graphs.tgz and $OUT/env.txt (device, versions, each part's exit code and seconds).
set -u
data=$1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/probe_graphs; mkdir -p $R
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
part() { echo "$1 rc $2 $(el) s" >> "$R/env.txt"; }
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch,timm,lightning;print(torch.__version__,timm.__version__,lightning.__version__)"; } > "$R/env.txt" 2>&1
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
PYTHONPATH=$PWD timeout 60 python3 -m pytest -q -m gpu tests/models/test_graphs.py tests/models/test_ivit.py \
  tests/data/test_gpu_pipeline.py -p no:cacheprovider > "$R/tests_gpu.txt" 2>&1; part tests $?
cadence="trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=5 trainer.sanity_val_steps=0"
probe() {  # probe NAME TREE [overrides...]
  local name=$1 tree=$2; shift 2
  PYTHONPATH=$tree timeout 50 python3 $tree/benchmarks/train_throughput.py --data "$data" --weights "$weights" \
    --rows probe --epochs 10 --workers 8 --paths device --steps 20 --profile-steps 3 --profile-fit-steps 20 \
    --runs /tmp/tt-$name --out "$R/tt_probe_$name.json" --set $cadence "$@" > "$R/tt_probe_$name.log" 2>&1
  part "probe $name" $?
}
[ -n "${OLD:-}" ] && probe old1 "$OLD"
probe new1 "$PWD"
probe eager1 "$PWD" model.cuda_graphs=false
if [ -n "${REPEAT:-}" ]; then [ -n "${OLD:-}" ] && probe old2 "$OLD"; probe new2 "$PWD"; fi
PYTHONPATH=$PWD timeout 60 python3 benchmarks/train_throughput.py --data "$data" --weights "$weights" --rows full \
  --epochs 10 --workers 8 --paths device --steps 20 --profile-steps 3 --runs /tmp/tt-full --out "$R/tt_full.json" \
  --set $cadence > "$R/tt_full.log" 2>&1; part full $?
date -u >> "$R/env.txt"
tar czf "$OUT/probe_graphs.tgz" -C /tmp probe_graphs; cp "$R/env.txt" "$OUT/"

#!/usr/bin/env bash
# Issue 31, where a linear probe's fit spends its time outside the steps, on one GPU (~4 min): the probe's 10-epoch
# fit (train_throughput.py, FitClock's split) once plain and once under py-spy (sampling every thread's Python stack,
# idle frames included, without stopping the process: which calls the set-up, the first validation and the
# checkpoint edge wait in); full fine-tuning plain; with OLD="DIR ..." (lfi/, configs/ and
# benchmarks/{train_throughput,profiling}.py of older commits: scripts/carry_probe.py --tree) each tree's probe,
# interleaved with this one's; with GD=DIR (a tree of commit b4d264f: lfi/ and benchmarks/{attention_kernels,
# isolated,profiling}.py), the fused ViT-S/16 attention with the gate's products on tf32 and on bf16
# operands (fused.GATE_DOTS of that commit, never timed before); IVIT=1: the I-ViT row (the oracle's store
# extracted first); NOSPY=1: no py-spy run; ONCE=1: each probe once; NOSTALL=1: no checkpoint_stall.py; FIXED=1:
# fit_fixed_costs.py on the GPU (the writer's start and the collector, side by side, ~3 min). Last, on the host's CPU, what a checkpoint write
# takes from the training thread with a writer thread and with lfi's writer process (checkpoint_stall.py).
# Usage, from the repo root, with py-spy's wheel in .whl/ (see the device README):
#   [GD=.gd] [OLD=".old .mid"] [IVIT=1] [NOSPY=1] [ONCE=1] [NOSTALL=1] [FIXED=1] scripts/gpu_probe_costs.sh DATA   # DATA: tiny-imagenet-200/{train-00,val} zips + weights/ (e.g. .carry)
# Results in $OUT/probe_costs.tgz and $OUT/env.txt (device, versions, each part's exit code and seconds).
set -u
data=$1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/probe_costs; mkdir -p $R
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
part() {  # a part's end: its line in env.txt, and everything so far in $OUT (a call cut short keeps it)
  echo "$1 rc $2 $(el) s" >> "$R/env.txt"; tar czf "$OUT/probe_costs.tgz" -C /tmp probe_costs; cp "$R/env.txt" "$OUT/"
}
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch,timm,lightning,triton;print(torch.__version__,timm.__version__,lightning.__version__,triton.__version__)"; } > "$R/env.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl; part pip $?
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
cadence="trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=5 trainer.sanity_val_steps=0"
tt() {  # tt NAME ROW [launcher...]: one 10-epoch fit of ROW, its own process, this tree (TREE=DIR: another)
  local name=$1 row=$2 tree=${TREE:-$PWD}; shift 2
  PYTHONPATH=$tree timeout 60 "$@" python3 $tree/benchmarks/train_throughput.py --data "$data" --weights "$weights" \
    --rows $row --epochs 10 --workers 8 --paths device --steps 20 --runs /tmp/tt-$name --out "$R/tt_$name.json" \
    --set $cadence > "$R/tt_$name.log" 2>&1
  part "$name" $?
}
tt probe1 probe
[ -z "${NOSPY:-}" ] && tt probe_spy probe /tmp/site/bin/py-spy record --nonblocking --idle --threads --rate 1000 \
  --format raw --output "$R/probe_spy.txt" --
for tree in ${OLD:-}; do TREE=$tree tt "old1_${tree#.}" probe; done
tt full1 full
if [ -z "${ONCE:-}" ]; then
  tt probe2 probe
  for tree in ${OLD:-}; do TREE=$tree tt "old2_${tree#.}" probe; done
fi
if [ -n "${IVIT:-}" ]; then  # I-ViT-Ti frozen with the oracle's maps: the store first
  store=/tmp/tin_train_oracle14
  PYTHONPATH=$PWD timeout 120 python3 -m lfi.cli extract --teacher oracle --data "$data" --dataset tinyimagenet \
    --split train --grid 14 --batch-size 256 --workers 15 --out $store > "$R/extract.log" 2>&1; part extract $?
  PYTHONPATH=$PWD timeout 90 python3 benchmarks/train_throughput.py --data "$data" --weights "$weights" --store $store \
    --rows ivit --epochs 10 --workers 8 --paths device --steps 20 --runs /tmp/tt-ivit --out "$R/tt_ivit.json" \
    --set $cadence > "$R/tt_ivit.log" 2>&1; part ivit $?
fi
if [ -n "${GD:-}" ]; then
  for dots in tf32 bf16; do
    PYTHONPATH=$GD timeout 60 python3 $GD/benchmarks/attention_kernels.py --shapes 256x6x197x64 --gates mix \
      --impls fused --prof-iters 3 --gate-dots $dots --out "$R/attention_kernels_$dots.json" > "$R/attention_kernels_$dots.log" 2>&1
    part "kernels $dots" $?
  done
fi
[ -n "${FIXED:-}" ] && { PYTHONPATH=$PWD timeout 300 python3 benchmarks/fit_fixed_costs.py --accelerator cuda \
  --out "$R/fit_fixed_costs.json" > "$R/fit_fixed_costs.log" 2>&1; part fit_fixed_costs $?; }
[ -z "${NOSTALL:-}" ] && { PYTHONPATH=$PWD timeout 120 python3 benchmarks/checkpoint_stall.py --out "$R/checkpoint_stall.json" \
  > "$R/checkpoint_stall.log" 2>&1; part checkpoint_stall $?; }
date -u >> "$R/env.txt"; part end 0

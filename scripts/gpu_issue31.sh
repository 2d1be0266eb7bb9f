#!/usr/bin/env bash
# Issue 31 on one GPU, one call (~9 min): the GPU tests of the kernels and of the GPU data path, end to end
# against the step for probe / full / I-ViT (10 epochs, FitClock's split of each fit, the bare step's device-busy
# time, the fit's own steps profiled: --profile-fit-steps), the host's cost per training step and the syncs in it (step_overhead.py), the fused attention per layer,
# the I-ViT-S/16 frozen step against the plain ViT, and the gate floor beside two SDPA attentions. Usage, from the
# repo root:
#   scripts/gpu_issue31.sh DATA        # DATA: tiny-imagenet-200/{train-00,val} zips + weights/ (e.g. .carry)
# Results in $OUT/issue31.tgz, env.txt also beside it (env.txt: device, versions, each part's exit code and seconds); each part has a time cap,
# so a slow part costs its own figures only.
set -u
data=$1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
R=/tmp/issue31; mkdir -p $R  # every file here, then one tarball in $OUT (at most 8 files come back)
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
part() { echo "$1 rc $2 $(el) s" >> "$R/env.txt"; }
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch,timm,lightning,triton;print(torch.__version__,timm.__version__,lightning.__version__,triton.__version__)"; } > "$R/env.txt" 2>&1
weights=$(ls "$data"/weights/deit_tiny_patch16_224*.safetensors | head -1)
store=stores/tin_train_oracle14
[ -f $store/store.json ] || timeout 90 python3 -m lfi.cli extract --teacher oracle --data "$data" --dataset tinyimagenet \
  --split train --grid 14 --batch-size 256 --workers 15 --out $store > "$R/extract.log" 2>&1; part extract $?
timeout 80 python3 -m pytest -q -m gpu tests/kernels/test_fused_interaction_attention.py tests/data/test_gpu_pipeline.py \
  -p no:cacheprovider > "$R/kernels_gpu.txt" 2>&1; part tests $?
timeout 220 python3 benchmarks/train_throughput.py --data "$data" --weights "$weights" --store $store --epochs 10 --workers 8 \
  --paths device --steps 20 --profile-steps 3 --profile-fit-steps 20 --out "$R/train_throughput.json" \
  --set trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=5 trainer.sanity_val_steps=0 \
  > "$R/train_throughput.log" 2>&1; part throughput $?
# the probe second in its process (the first fit pays the TensorBoard import and the first validation's set-up),
# and full fine-tuning with last.ckpt every epoch against the cadence-5 row above
timeout 120 python3 benchmarks/train_throughput.py --data "$data" --weights "$weights" --rows full probe --paths device \
  --epochs 10 --workers 8 --steps 20 --runs /tmp/tt-order --out "$R/tt_probe_second.json" \
  --set trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=5 trainer.sanity_val_steps=0 \
  > "$R/tt_probe_second.log" 2>&1; part "probe second" $?
timeout 90 python3 benchmarks/train_throughput.py --data "$data" --weights "$weights" --rows full --paths device \
  --epochs 10 --workers 8 --steps 20 --runs /tmp/tt-ckpt1 --out "$R/tt_full_ckpt1.json" \
  --set trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=1 trainer.sanity_val_steps=0 \
  > "$R/tt_full_ckpt1.log" 2>&1; part "full ckpt every epoch" $?
for variant in vit iq_ic_gc; do  # the host's cost per step (lfi train, Lightning alone, bare) and real syncs per step
  timeout 45 python3 benchmarks/step_overhead.py --cuda --variant $variant --epochs 2 --repeats 2 \
    --out "$R/step_overhead_$variant.json" > "$R/step_overhead_$variant.log" 2>&1; part "overhead $variant" $?
done
timeout 35 python3 benchmarks/attention_kernels.py --shapes 256x6x197x64 --gates mix --impls fused --prof-iters 3 \
  --out "$R/attention_kernels.json" > "$R/attention_kernels.log" 2>&1; part kernels $?
timeout 70 python3 benchmarks/ivit_step.py --models vit_small_patch16_224 --modes frozen --variants plain fused --profile 2 \
  --time-budget 45 --out "$R/ivit_step_vit_s_frozen.json" > "$R/ivit_step.log" 2>&1; part step $?
timeout 50 python3 benchmarks/gate_floor.py --shapes 256x6x197 --configs 128,4 256,4 --out "$R/gate_floor.json" \
  > "$R/gate_floor.log" 2>&1; part floor $?
date -u >> "$R/env.txt"
tar czf "$OUT/issue31.tgz" -C /tmp issue31; cp "$R/env.txt" "$OUT/"

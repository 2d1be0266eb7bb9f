#!/usr/bin/env bash
# Issue 28 item 3 in one GPU call (one H100, <= 10 min): the grown grids of two studies, over their committed
# run folders. Run from the repo root:   OUT=<results folder> scripts/gpu_grids.sh DATA
#  - the frozen TinyImageNet study (configs/study/tinyimagenet/study.yaml): every tuned row's new grid points
#    (17 tuning runs), then the seeds of each row whose choice moved and of the rows that copy its choice
#    (controls, 10% and 50% rows); `lfi study` moves their old seed folders aside (seedK.stale-*) first;
#  - the fully trained shortcut study (configs/study/shortcut/study.yaml, folder study/shortcut_full_1000):
#    every run, on all 1,000 test images (16 tuning runs + 8 seeds; the 113-image runs of
#    docs/results/h100/study/shortcut_full are another study name, so none of them is skipped into this one).
# DATA: tiny-imagenet-200/{tiny-imagenet-200-train-00.zip, tiny-imagenet-200-val.zip: the FULL val zip, whose
# 1,000 images of the 20 classes are the shortcut's test sets} and weights/{deit_tiny_patch16_224.bf16.safetensors,
# imagenet_synset_words.txt}: 57.2 MB. It fits the 64 MiB that travel with the call only if the tracked PNG and
# .gz files (4.5 MB, under docs/ and benchmarks/results/) are left out of the working tree for the call.
# The committed folders are copied into the work dir (WORK, default runs/grids; its run folders are removed
# first, its caches kept) so finished runs and their choices are skipped.
# Every part is a resumable `lfi study` (scripts/gpu_study.sh) under `timeout`, ending at a second counted
# from the start: after the returned folders are committed, the same command goes on where this one stopped.
#   p  (0 - P_END)     the teachers' stores and the image cache, once, before the parts that read them
#   a  (p - A_END)     the frozen study's tuned rows (A_JOBS at once): new points, then moved rows' seeds 1-2
#   b  (p - B_END)     beside a: the shortcut study, all of it (B_JOBS at once)
#   c  (a - C_END)     the whole frozen study: the controls and 10%/50% rows of a moved choice (C_JOBS)
# $OUT (7 files): env.txt (GPU, versions, each part's start, end and exit status in seconds from the start),
# p.log a.log b.log c.log (each part's `lfi study` output: runs started, ok, failed, skipped, folders moved
# aside), ti.tgz and sc.tgz (the two studies' run folders without weights, checkpoints, tb logs or stale-*).
set -uo pipefail  # no -e: a part that fails or times out is logged, and the parts after it still run
data=${1:?usage: OUT=folder scripts/gpu_grids.sh DATA}
out=${OUT:?set OUT to the folder the results go to}
work=${WORK:-runs/grids}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
TI=configs/study/tinyimagenet/study.yaml SC=configs/study/shortcut/study.yaml
TI_DONE=${TI_DONE:-docs/results/h200/study/tinyimagenet}       # committed folders, copied in if present
SC_DONE=${SC_DONE:-docs/results/h100/study/shortcut_full_1000}
t0=$(date +%s) log=$out/env.txt
since() { echo $(($(date +%s) - t0)); }
left() { local r=$(($1 - $(since))); echo $((r > 1 ? r : 1)); }

# part NAME PREPARE STUDY WORK END [lfi study options]: one resumable part, killed at END s from the start
part() {
  local name=$1 prepare=$2 study=$3 dir=$4 end=$5 rc
  shift 5
  echo "$name start $(since) s" >>"$log"
  PREPARE=$prepare timeout "$(left "$end")" scripts/gpu_study.sh "$data" "$dir" "$study" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name rc $rc end $(since) s" >>"$log"
  [ "$rc" = 124 ] && sleep 5  # let the killed runs' processes exit before the next part starts
  return "$rc"
}
frozen() {
  part a configs/study/tinyimagenet/base.yaml "$TI" "$work/ti" "${A_END:-470}" --jobs "${A_JOBS:-6}" --only "$tuned"
  part c configs/study/tinyimagenet/base.yaml "$TI" "$work/ti" "${C_END:-555}" --jobs "${C_JOBS:-8}"
}
shortcut() {
  part b configs/study/tinyimagenet_shortcut.yaml "$SC" "$work/sc" "${B_END:-555}" --jobs "${B_JOBS:-8}"
}

# the committed folders are the runs' only source: a warm machine's earlier run folders would mix into them
rm -rf "$work/ti/runs" "$work/sc/runs"
mkdir -p "$out" "$work/ti/runs/study" "$work/sc/runs/study"
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, timm, lightning; print(torch.__version__, timm.__version__, lightning.__version__)"; } >"$log" 2>&1
[ -d "$TI_DONE" ] && cp -r "$TI_DONE" "$work/ti/runs/study/"
[ -d "$SC_DONE" ] && cp -r "$SC_DONE" "$work/sc/runs/study/"
tuned=$(python3 -c "from lfi.train.study import read_study
print(','.join(r.name for r in read_study('$TI').rows.values() if r.tune))") || exit 1

# the stores and the cache, made once: side by side, two parts would both make them into the same folders
if part p configs/study/tinyimagenet/base.yaml "$TI" "$work/ti" "${P_END:-240}" --report-only; then
  frozen &
  shortcut
  wait
else  # p failed or ran out of time (its log says why): the parts one after the other, never racing
  frozen
  shortcut
fi
for w in ti sc; do  # the run folders only: no weights, checkpoints, tb logs, locks, or runs moved aside
  tar czf "$out/$w.tgz" -C "$work/$w/runs" --exclude='*.ckpt' --exclude='*.safetensors' --exclude='*.stale-*' \
    --exclude=checkpoints --exclude=tb --exclude=.lock study
done
{ ls -l "$out"; date -u; } >>"$log"

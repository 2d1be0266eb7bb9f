#!/usr/bin/env bash
# Issue 28 item 5, Fig. 6 on PACS with the trained map, in one GPU call (one H100, <= 9.5 min). From the repo
# root:   OUT=<results folder> scripts/gpu_pacs_human.sh DATA
#   t (0 - T_END)  Table 4's art_painting-unseen students retrained, their weights kept: the six rows of
#                  configs/study/pacs/ at Table 4's settings, seeds 0-2 (scripts/gpu_pacs.sh with
#                  DOMAINS=art_painting: the `vit` teacher's maps of PACS's training images, the caches, then
#                  18 runs, T_JOBS at once);
#   h (t - H_END)  `lfi eval-human` of those 18 runs on OSIE as the TinyImageNet half was scored on 2026-12-07
#                  (first 200 stimuli, --teacher vit, default grid and metrics), rows in the order of the
#                  2026-12-03 PACS scoring, into pacs/: `python3 scripts/human_claims.py
#                  docs/results/h100/human/tinyimagenet <pacs>` recomputes the 32 claims. Not run unless t ends.
# DATA: the folder scripts/carry_pacs_human.py writes (.carry_pacs: PACS-112 whole with its grey sketches
# re-saved losslessly smaller, OSIE's 200 stimuli with their fixations, the bf16 DeiT-Tiny and its synsets);
# it fits with the tree only if the tracked PNG and .gz files are left out of the call (that script checks).
# Each part runs under `timeout`, ending at a second counted from the start. A finished run is skipped, so
# the same command on the same warm machine goes on where a killed one stopped; the weights never come back,
# so on a fresh machine the runs start again.
# $OUT (5 files): env.txt (GPU, versions, each part's start, end and exit status in seconds from the start),
# t.log, h.log (each part's output), runs.tgz (the study/pacs run folders without weights, checkpoints or tb
# logs), pacs.tgz (eval-human's folder pacs/: human_alignment.{md,csv,json,png,pdf}; the results commit the
# json gzipped, as scripts/human_claims.py reads human_alignment.json.gz).
set -uo pipefail  # no -e: a part that fails or times out is logged, and the tarballs are still written
data=${1:?usage: OUT=folder scripts/gpu_pacs_human.sh DATA}
out=${OUT:?set OUT to the folder the results go to}
work=${WORK:-runs/pacs_human}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
t0=$(date +%s) log=$out/env.txt
since() { echo $(($(date +%s) - t0)); }
left() { local r=$(($1 - $(since))); echo $((r > 1 ? r : 1)); }

# part NAME END COMMAND...: one part, killed at END s from the start, its output in NAME.log
part() {
  local name=$1 end=$2 rc
  shift 2
  echo "$name start $(since) s" >>"$log"
  timeout "$(left "$end")" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name rc $rc end $(since) s" >>"$log"
  return "$rc"
}

mkdir -p "$out" "$work/human"
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, timm, lightning; print(torch.__version__, timm.__version__, lightning.__version__)"; } >"$log" 2>&1
runs=()  # one --run per row, its three seeds: the rows of the 2026-12-03 scoring, in its order
for row in probe vit_full iq_gc ivit_vit centre shuffled; do
  runs+=(--run "$work/runs/study/pacs/$row/test_domains=art_painting/seed"{0,1,2})
done
if part t "${T_END:-380}" env DOMAINS=art_painting scripts/gpu_pacs.sh "$data" "$work" --jobs "${T_JOBS:-9}"; then
  part h "${H_END:-560}" python3 -m lfi.cli eval-human "${runs[@]}" --data "$data" --limit 200 --teacher vit \
    --out "$work/human/pacs"
else
  echo "h not run: part t did not end (t.log says why)" >>"$log"
fi
tar czf "$out/runs.tgz" -C "$work/runs" --exclude='*.ckpt' --exclude='*.safetensors' --exclude=checkpoints \
  --exclude=tb --exclude=.lock study/pacs
tar czf "$out/pacs.tgz" -C "$work/human" pacs
{ ls -l "$out"; date -u; } >>"$log"

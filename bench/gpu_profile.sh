#!/usr/bin/env bash
# The GPU profile and speed check as one script (issue: profile the GPU steps, then make them faster):
#   1. eager steps at the reference settings (resnet50, 64 px, pt/SupCon 512, MPL 64 + 448, two views):
#      timing + benchmark.py --profile (kernel classes, launches, idle, roofline against measured ceilings);
#   2. the losses of 8 steps of each pipeline: eager, eager again, CUDA graphs (benchmark.py --check-graphs);
#   3. the same timing + profile with --cuda-graphs;
#   4. the CUDA tests (tests/test_cuda_graphs.py, tests/test_profile.py);
#   5. face extraction on the GPU against the reference-style loop (bench/extract_bench.py --device cuda).
# Results go to $OUT (default bench/out): at most 8 files (the device tool brings back 8): log.txt, the
# reports, and traces.tar (the gzipped torch.profiler traces, for Perfetto).
#
#   bash bench/gpu_profile.sh                     # on a GPU machine
#   DEVICE=cpu QUICK=1 bash bench/gpu_profile.sh  # a dry run of the same commands on a CPU (small settings)
set -u
OUT=${OUT:-bench/out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
small=()
if [ -n "${QUICK:-}" ]; then
    small=(--backbone test_resnet --img-size 32 --batch 32 --batch-labeled 8 --batch-unlabeled 16 --images 64
           --source-size 48 --steps 4 --warmup 1 --window 2)
fi
common=(--device "$DEVICE" --no-reference --no-data-path --data "$WORK/data" "${small[@]}")

say() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }
keep_traces() { (cd "$WORK" && tar rf "$OUT/traces.tar" "$1"/*.trace.json.gz) 2>>"$LOG"; }

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  "$PY" -c "import torch, timm, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
} >>"$LOG" 2>&1

say "1. eager steps: timing and profile"
timeout "${T1:-110}" "$PY" -m bench.benchmark "${common[@]}" --no-cuda-graphs --profile "$WORK/eager" --md "$OUT/results-eager.md" >>"$LOG" 2>&1
echo "rc=$?" | tee -a "$LOG"
cp "$WORK/eager/profile.md" "$OUT/profile-eager.md" 2>>"$LOG" && keep_traces eager

say "2. CUDA graphs against eager steps: logged values of 8 steps"
timeout "${T2:-80}" "$PY" -m bench.benchmark --device "$DEVICE" --data "$WORK/data" "${small[@]}" --check-graphs 8 \
    --md "$OUT/graph-check.md" >>"$LOG" 2>&1
echo "rc=$?" | tee -a "$LOG"

say "3. CUDA-graphed steps: timing and profile"
timeout "${T3:-100}" "$PY" -m bench.benchmark "${common[@]}" --cuda-graphs --profile "$WORK/graphs" \
    --md "$OUT/results-graphs.md" >>"$LOG" 2>&1
echo "rc=$?" | tee -a "$LOG"
cp "$WORK/graphs/profile.md" "$OUT/profile-graphs.md" 2>>"$LOG" && keep_traces graphs

say "4. CUDA tests"
timeout "${T4:-120}" "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_cuda_graphs.py tests/test_profile.py \
    >>"$LOG" 2>&1
echo "rc=$?" | tee -a "$LOG"

if [ -z "${NO_EXTRACT:-}" ]; then
    say "5. face extraction on the device"
    timeout "${T5:-70}" "$PY" bench/extract_bench.py --device "$DEVICE" --videos 4 --frames 90 --sample 32 \
        --size 640x360 --workers 1 --repeat 2 >"$OUT/extract.txt" 2>&1
    echo "rc=$?" | tee -a "$LOG"
fi

say "summary"
for f in "$OUT"/results-eager.md "$OUT"/results-graphs.md; do
    [ -f "$f" ] && grep -E "^\| (pt|supcon|mpl) \| ours" "$f" | sed "s|^|$(basename "$f"): |"
done
[ -f "$OUT/graph-check.md" ] && grep -E "^\| (pt|supcon|mpl) \| (loss|t_loss|s_supcon|t_supcon)" "$OUT/graph-check.md"
grep -hE "^### |step runs at|^Step " "$OUT"/profile-*.md 2>/dev/null
grep -E "passed|failed" "$LOG" | tail -2
[ -f "$OUT/extract.txt" ] && tail -n 5 "$OUT/extract.txt"
rm -rf "$WORK"

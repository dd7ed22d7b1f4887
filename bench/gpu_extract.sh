#!/usr/bin/env bash
# Face extraction on a GPU as one script: the detector's tests on the GPU (preprocess/detector.py's GPU form
# against facenet-pytorch's detections), then bench/extract_bench.py at stop 21's settings (4 videos of 90
# frames, 640 x 360, 32 sampled each) with the time of each stage, with 16 videos, and at 1280 x 720; ours with
# extract_faces's defaults on a GPU (32 frames a call) and --workers 1 and 4. Results go to $OUT (default
# bench/out): log.txt.
#
#   bash bench/gpu_extract.sh                          # on a GPU machine
#   DEVICE=cpu QUICK=1 bash bench/gpu_extract.sh       # a dry run of the same commands on a CPU (small settings)
set -u
OUT=${OUT:-bench/out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
say() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }
sizes=(--videos 4 --frames 90 --sample 32 --size 640x360)
many=(--videos 16 --frames 90 --sample 32 --size 640x360)
large=(--videos 4 --frames 60 --sample 32 --size 1280x720)
threads=4          # extract_faces's default on a GPU
if [ -n "${QUICK:-}" ]; then
    sizes=(--videos 2 --frames 20 --sample 6 --size 320x180)
    many=(--videos 3 --frames 20 --sample 6 --size 320x180)
    large=(--videos 2 --frames 20 --sample 6 --size 480x270)
    threads=2
fi

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  echo "cores: $(nproc)"
  "$PY" -c "import torch, cv2; print('torch', torch.__version__, 'opencv', cv2.__version__)"
} >>"$LOG" 2>&1

say "1. the detector's tests (the GPU's form against facenet-pytorch, on $DEVICE)"
timeout "${T1:-150}" "$PY" -m pytest -q -p no:cacheprovider -n 0 tests/test_detector.py >>"$LOG" 2>&1
echo "rc=$?" | tee -a "$LOG"

# bench TITLE SECONDS ARGS...: one bench/extract_bench.py run, its output in the log
bench() {
    say "$1"
    timeout "$2" "$PY" bench/extract_bench.py --device "$DEVICE" --workers "$threads" "${@:3}" >>"$LOG" 2>&1
    echo "rc=$?" | tee -a "$LOG"
}
bench "2. extract_bench, $DEVICE, ${sizes[*]}, extract_faces's defaults (32 frames a call on a GPU)" "${T2:-150}" \
    "${sizes[@]}" --repeat 3 --stages
bench "3. four times the videos: ${many[*]}" "${T3:-150}" "${many[@]}" --repeat 2
bench "4. larger frames: ${large[*]}" "${T4:-150}" "${large[@]}" --repeat 2 --stages
say "end"

#!/usr/bin/env bash
# The GPU check as one script: the benchmark at the reference settings (resnet50, 64 px, MPL 64 + 448, pt and
# SupCon 512), then short checks of the fp16 (loss-scaler) path, torch.compile, and the demo trained end to end
# on the GPU from a pack. STAGES picks some of: bench memory fp16 demo compile (default: all but memory).
# Results go to $OUT (default bench/out); the tables are printed last.
#
#   bash bench/gpu_check.sh                  # on a GPU machine
#   DEVICE=cpu QUICK=1 bash bench/gpu_check.sh   # a dry run of the same commands on a CPU (small settings)
set -u
OUT=${OUT:-bench/out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
small=()
if [ -n "${QUICK:-}" ]; then
    small=(--backbone test_resnet --batch 64 --batch-labeled 16 --batch-unlabeled 32 --images 256 --steps 4 --warmup 1 --ref-steps 2)
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true; } >"$OUT/env.txt" 2>&1
"$PY" - >>"$OUT/env.txt" 2>&1 <<'EOF'
import time, torch, timm, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "timm", timm.__version__)
if torch.cuda.is_available():
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    print(f"bf16 8192^3 matmul: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s")
EOF
cat "$OUT/env.txt"

stage() { [[ " ${STAGES:-bench fp16 demo compile} " == *" $1 "* ]]; }

if stage bench; then
    echo "== benchmark, reference settings"
    timeout "${BENCH_TIMEOUT:-280}" "$PY" -m bench.benchmark --device "$DEVICE" "${small[@]}" --md "$OUT/results.md" \
        >"$OUT/bench.log" 2>&1
    echo "rc=$?"
fi

if stage memory; then
    echo "== MPL step, 200 steps: memory in use after warm-up and at the end"
    timeout 90 "$PY" -m bench.benchmark --device "$DEVICE" "${small[@]}" --pipelines mpl --no-reference --no-data-path \
        --steps 200 --md "$OUT/results-200steps.md" >"$OUT/memory.log" 2>&1
    echo "rc=$?"; grep -E "^\| mpl" "$OUT/memory.log" | head -3
fi

if stage fp16; then
    echo "== fp16 + loss scaler path (MPL step only)"
    timeout 50 "$PY" -m bench.benchmark --device "$DEVICE" "${small[@]}" --pipelines mpl --amp-dtype fp16 --no-reference \
        --no-data-path --steps 10 --md "$OUT/results-fp16.md" >"$OUT/fp16.log" 2>&1
    echo "rc=$?"; grep -E "^\| mpl|Error|error" "$OUT/fp16.log" | head -5
fi

if stage demo; then
    echo "== demo end to end on the device, from a pack"
    {
        timeout 120 bash -c "$PY -m preprocess.pack --config configs/demo.yaml --out .cache/demo-pack &&
            $PY train_supconmpl.py --config configs/demo.yaml --device $DEVICE data.packed=.cache/demo-pack log_every=100 &&
            $PY evaluate.py --method supconmpl --config configs/demo.yaml --device $DEVICE data.packed=.cache/demo-pack --no-plots"
        echo "rc=$?"
    } >"$OUT/demo.log" 2>&1
    tail -n 12 "$OUT/demo.log"
fi

if stage compile; then
    echo "== torch.compile (${COMPILE_PIPELINES:-pt} step)"
    timeout "${COMPILE_TIMEOUT:-120}" "$PY" -m bench.benchmark --device "$DEVICE" "${small[@]}" --pipelines "${COMPILE_PIPELINES:-pt}" \
        --compile --no-reference --no-data-path --steps 20 --md "$OUT/results-compile.md" >"$OUT/compile.log" 2>&1
    echo "rc=$?"; grep -E "^\| (pt|supcon|mpl)" "$OUT/compile.log" | head -3
fi

if stage bench; then
    echo "== main results"
    tail -n 45 "$OUT/bench.log"
fi

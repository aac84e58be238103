#!/usr/bin/env bash
# The GPU check (issue #12): run it first on any machine the device tool lends.
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, about 5 minutes on one H100
#   DEVICE=cpu EPOCH_STEPS=2 BENCH_ARGS="--steps 1 --warmup 1 --batch 64" \
#     PROFILE_ARGS="--steps 1 --warmup 1 --batch 64 --data dsprites-mini" \
#     bash benchmarks/gpu_check.sh          # a smoke run of the script itself on a CPU
# 1. the gpu-marked tests; 2. bench_train.py on the device in fp32 and bf16, eager and compiled,
# and profile_step.py's breakdown of a tcvae step; 3. one epoch of
# full dSprites (paper MLP, batch 2048) for vae and tcvae in each precision; then a table.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
EPOCH_STEPS="${EPOCH_STEPS:-}"   # empty: one real epoch (737,280 images = 360 steps)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

python - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
PY

echo "== gpu-marked tests"
if [ "$DEVICE" = cpu ]; then
    echo "(skipped on the CPU)"
else
    python -m pytest -q -p no:cacheprovider -m gpu tests > "$OUT/gpu-tests.txt" 2>&1 \
        || echo "(gpu tests failed; their output follows)"
    tail -15 "$OUT/gpu-tests.txt"
fi

echo "== bench_train.py on $DEVICE"
# Eager and compiled rows (the compiled kernels are Triton ones on CUDA, isa_core.compiled).
for precision in fp32 bf16; do
    python benchmarks/bench_train.py --device "$DEVICE" --precision "$precision" --compile both \
        ${BENCH_ARGS:-} | tee "$OUT/bench-$precision.txt"
done
echo "== where a tcvae step's time goes (benchmarks/profile_step.py)"
for compile in --compile --no-compile; do
    python benchmarks/profile_step.py --device "$DEVICE" --objective tcvae "$compile" \
        ${PROFILE_ARGS:-} | grep -A9 "whole step"
done

echo "== one epoch of full dSprites (paper MLP, batch 2048)"
length=(--epochs 1)
[ -n "$EPOCH_STEPS" ] && length=(--steps "$EPOCH_STEPS")
printf '| objective | precision | steps | seconds | images/s |\n|---|---|---:|---:|---:|\n' > "$OUT/epoch.md"
for objective in vae tcvae; do
    for precision in fp32 bf16; do
        run="$OUT/$objective-$precision"
        start=$(date +%s.%N)
        isa train --data dsprites --objective "$objective" --precision "$precision" \
            --device "$DEVICE" "${length[@]}" --checkpoint-every 100000 -q -o "$run" > /dev/null
        end=$(date +%s.%N)
        python - "$run" "$start" "$end" "$objective" "$precision" >> "$OUT/epoch.md" <<'PY'
import json, sys
run, start, end, objective, precision = sys.argv[1:]
last = [json.loads(line) for line in open(f"{run}/metrics.jsonl")][-1]
seconds = float(end) - float(start)
steps = int(last["step"])
print(f"| {objective} | {precision} | {steps} | {seconds:.1f} | {steps * 2048 / seconds:,.0f} |")
PY
    done
done
cat "$OUT/epoch.md"

#!/usr/bin/env bash
# GPU figures of issue 11, in one prepared run (≤ 8 minutes on one H100/H200; every step has its own timeout, so a
# slow or failing step costs at most its budget and the rest still runs). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          # default: benchmarks/results/gpu-<date>
#
# Writes one JSON line per measurement to OUT_DIR/*.jsonl (raw figures for docs/performance.md) and a log per step.
#   1. bench_pretrain.py: B/14 v2 full TIPS step at 224 + 6×98 and at 448 + 6×140 (images/s, MFU from
#      torch.utils.flop_counter, peak memory), with and without activation checkpointing.
#   2. bench_memory.py on the GPU: iBOT head + loss peak at 4096 and at 131072 tokens × 32768 prototypes
#      (b14-v2-hr: 128 images × 1024 patches).
#   3. bench_inference.py: encoding at 448 and 224, batch 128, bf16, vs native Tipsv2Model, eager and torch.compile.
#   4. DDP vs FSDP on one GPU: 30 steps of training/pretrain.py (B/14 v2, embedded scenes at 224, batch 64).
#   5. Largest batch per GPU at 448 + 6×140 with activation checkpointing (doubling until out of memory).
set -uo pipefail

OUT=${1:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
START=$(date +%s)

step() {  # step NAME SECONDS command...: run with a timeout, JSON lines to NAME.jsonl, everything to NAME.log
    local name=$1 budget=$2
    shift 2
    echo "== $name (≤ ${budget}s, $(( $(date +%s) - START ))s elapsed)"
    timeout "$budget" "$@" > >(tee -a "$OUT/$name.log" | grep '^{' >> "$OUT/$name.jsonl") 2>> "$OUT/$name.log"
    local rc=$?
    echo "   exit $rc"
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" \
    >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# 1. full TIPS step, B/14 v2 (iters/rounds kept small: each configuration also builds the native model)
for ckpt in "" "--gradient-checkpointing"; do
    step pretrain_224 60 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 224 --local-size 98 \
        --local-crops 6 --batch-size 128 --iters 5 --rounds 2 $ckpt
    step pretrain_448 75 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 --local-size 140 \
        --local-crops 6 --batch-size 32 --iters 5 --rounds 2 $ckpt
done

# 2. iBOT memory on the GPU
step memory 40 python benchmarks/bench_memory.py --device cuda --component ibot --tokens 4096 --prototypes 32768
step memory 40 python benchmarks/bench_memory.py --device cuda --component ibot --tokens 131072 --prototypes 32768

# 3. encoding vs native (+ torch.compile)
step inference 60 python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 224 --batch-size 128 \
    --dtype bfloat16 --rounds 3
step inference_compile 90 python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 \
    --batch-size 128 --dtype bfloat16 --rounds 3 --compile

# 4. DDP vs FSDP, one GPU, the real loop (scenes data, so nothing to download)
for mode in ddp fsdp; do
    step "loop_$mode" 60 accelerate launch --config_file training/accelerate_configs/single-gpu.yaml \
        training/pretrain.py --config training/configs/b14-v2.yaml --output_dir "$OUT/loop_$mode" \
        data.source=scenes data.streaming=false data.num_examples=2048 data.scene_image_size=224 data.num_workers=6 \
        model.tokenizer=null training.max_steps=30 training.batch_size=64 training.logging_steps=10 \
        training.save_steps=0 training.compile=false training.report_to=none training.progress_bar=false \
        eval.num_examples=0 training.distributed=$mode
    grep '"step": 30' "$OUT/loop_$mode/metrics.jsonl" 2>/dev/null | sed "s/^{/{\"loop\": \"$mode\", /" >> "$OUT/loop.jsonl"
done

# 5. largest batch at 448 + 6×140 with checkpointing (stop at the first failure or when time runs short)
for batch in 64 128 256 512; do
    [ $(( $(date +%s) - START )) -gt 420 ] && break
    step max_batch_448 45 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 \
        --local-size 140 --local-crops 6 --batch-size $batch --iters 2 --rounds 1 --warmup 1 \
        --gradient-checkpointing || break
    grep -q "\"batch\": $batch" "$OUT/max_batch_448.jsonl" 2>/dev/null || break
done

echo "done in $(( $(date +%s) - START ))s; results in $OUT"

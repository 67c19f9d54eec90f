#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md's GPU table in one run on a lent machine, each under its own time limit,
# logs and a summary under $OUT (default ./gpu-out). Expected 6-9 minutes on an H100/H200 (not yet
# run on a GPU); the limits add up to more than the 520 s budget, and a step that
# would start with under 30 s of it left is skipped and says so.
#
# Before it, as ../shared/gpu/README.md says: `bash ../shared/gpu/pack.sh` here once, then on the
# device three calls carrying .gpu/dali1, dali2, dali3 (`mkdir -p /tmp/dparts && cp .gpu/dali*/part*
# /tmp/dparts/`) and this call carrying [".gpu/dali4", ".gpu/whl", ".gpu/on-device.sh"]:
#
#     bash .gpu/on-device.sh && bash benchmarks/gpu_session.sh
#
# Without DALI (deepspeed only: carry .gpu/whl and install it as the README says) the DALI rows
# and the end-to-end run are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
PY=${PY:-python3}
BUDGET=${BUDGET:-520}   # seconds for all steps together (each may overrun by its 10 s kill grace)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d /tmp/site ]; then export PYTHONPATH=$PYTHONPATH:/tmp/site PATH=/tmp/site/bin:$PATH; fi
mkdir -p "$OUT"
SUMMARY=$OUT/summary.md
START=$SECONDS

# run NAME LIMIT CMD...: CMD under `timeout LIMIT` (less if the budget is running out), output to
# $OUT/NAME.log, its table rows and PASS/FAIL lines copied into the summary
run() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - (SECONDS - START) ))
  (( limit > left )) && limit=$left
  if (( limit < 30 )); then
    echo "- $name: skipped, ${left} s of the budget left" | tee -a "$SUMMARY"; return
  fi
  echo "## $name (limit ${limit} s)" >> "$SUMMARY"
  echo "\$ $*" >> "$SUMMARY"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -E '^\||PASS|FAIL|no CUDA|not measured|GFLOP| px, PGD| px, training|JPEGs per split|Error' "$OUT/$name.log" >> "$SUMMARY"
  echo "exit $rc after $(( SECONDS - t0 )) s$( (( rc == 124 || rc == 137 )) && echo ' (time limit)')" >> "$SUMMARY"
  echo >> "$SUMMARY"
  echo "$name: exit $rc, $(( SECONDS - t0 )) s"
}

{
  echo "# GPU session, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $PY -c "import torch as t; print('torch', t.__version__, 'cuda', t.version.cuda, 'cudnn', t.backends.cudnn.version())"
  $PY -c "import deepspeed; print('deepspeed', deepspeed.__version__)" 2>&1 | tail -1
  $PY -c "import nvidia.dali as d; print('dali', d.__version__)" 2>&1 | tail -1
  echo "CPUs: $(nproc)"
  echo
} > "$SUMMARY"
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing measured" | tee -a "$SUMMARY"; exit 2
fi
HAS_DALI=$($PY -c "import nvidia.dali" 2>/dev/null && echo 1 || echo 0)

# 1. correctness first: graph mode equal to eager (NCHW fp32 attack, channels_last bf16 attack)
run gpu_check 90 $PY benchmarks/step_gpu_check.py
#    the engine under the DeepSpeed launcher on one GPU (an NCCL group of one rank, so the
#    collectives' device rule is live) and its host syncs per step under CUDA's sync debug mode
run engine_syncs_z0 60 deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=0
run engine_syncs_z2 60 deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=2

# 2. the bare step, ResNet-50 224 px, training forwards under bf16 autocast
R50="--model resnet50 --image-size 224 --precision bf16"
run step_plain_b256 50 $PY benchmarks/step_throughput.py $R50 --batch 256 --kinds plain \
  --memory-formats contiguous channels_last --iters 5
run step_b128 140 $PY benchmarks/step_throughput.py $R50 --batch 128 --kinds plain madry madry+aad \
  --modes eager graph --memory-formats contiguous channels_last --attack-precisions fp32 bf16 --iters 5
run step_b32 60 $PY benchmarks/step_throughput.py $R50 --batch 32 --kinds madry+aad attack+cams \
  --modes eager graph --memory-formats contiguous channels_last --attack-precisions fp32 bf16 --iters 5
#    capturing the whole step (attack, training forwards, double backward, SGD) against the attack alone
run step_whole_graph 90 $PY benchmarks/step_throughput.py $R50 --batch 32 128 --kinds plain madry madry+aad \
  --modes eager graph graph-step --memory-formats channels_last --attack-precisions bf16 --iters 5

# 3. the data path at steady state: torch (DataLoader workers) vs dali-gpu (nvJPEG), all cores
BACKENDS="torch"; [ "$HAS_DALI" = 1 ] && BACKENDS="torch dali-gpu"
run data 80 $PY benchmarks/data_throughput.py --backends $BACKENDS --splits train --images 8192 \
  --epochs 2 --batch-size 64 --workers "$(nproc)" --memory-format channels_last

# 4. the engine end to end on the imagenet-resnet50 preset (synthetic JPEGs), dali-gpu; then
#    whether dali-gpu writing HWC costs against CHW (on the CPU pipeline it cost about 4 %)
if [ "$HAS_DALI" = 1 ]; then
  run engine_dali_gpu 120 $PY benchmarks/engine_throughput.py --preset imagenet-resnet50 --backend dali-gpu \
    --steps 50 --skip 10 --timeout 110 train.step_mode=auto
  run data_dali_chw 40 $PY benchmarks/data_throughput.py --backends dali-gpu --splits train --images 8192 \
    --epochs 2 --batch-size 64 --workers "$(nproc)" --memory-format contiguous
else
  echo "- engine_dali_gpu, data_dali_chw: skipped, DALI is not installed" | tee -a "$SUMMARY"
fi
#    activation memory per image against the allocator's peak: the batch-size guidance
run step_memory 60 $PY benchmarks/step_memory.py --batches 16 32

# 5. the timm backbones, 224 px, random init: graph equal to eager, then the steps in
#    the ImageNet presets' layout (channels_last for ConvNeXt; a ViT's tokens have no such layout)
run gpu_check_timm 90 $PY benchmarks/step_gpu_check.py --models timm/convnext_tiny timm/vit_small_patch16_224
TIMM="--image-size 224 --precision bf16 --batch 128 --kinds plain madry madry+aad --modes eager graph \
  --attack-precisions bf16 --iters 5"
run step_convnext_t 70 $PY benchmarks/step_throughput.py --model timm/convnext_tiny $TIMM --memory-formats channels_last
run step_vit_s 70 $PY benchmarks/step_throughput.py --model timm/vit_small_patch16_224 $TIMM

echo "total $(( SECONDS - START )) s" | tee -a "$SUMMARY"

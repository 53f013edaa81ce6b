#!/usr/bin/env bash
# One prepared run of the accelerator measurements issue 27 asks for (docs/PERFORMANCE.md,
# "On an accelerator"), for a lent GPU whose image has jax, flax, optax, torch and timm
# but no TensorFlow, tfds, clu or ml_collections:
#
#   pip install --target=.bare_deps ml_collections absl-py --no-deps     # here, once
#   bash benchmarks/device_run.sh OUT_DIR                                 # there (carry .bare_deps)
#   SMOKE=1 bash benchmarks/device_run.sh /tmp/device_smoke              # rehearsal on CPU
#
# Each part runs under `timeout` (BUDGET_S seconds each, default 150) and writes its
# output to OUT_DIR/<part>.txt as it goes, so a part that runs out of time still leaves
# what it printed and the next part starts. Parts, in order of importance:
#   versions            nvidia-smi, jax/flax/optax/torch/timm versions, the devices
#   timm_bf16           the trainer's train step at 299 in bfloat16 against timm under
#                       AMP (bfloat16) + torch.compile, interleaved rounds (bench_vs_timm)
#   timm_fp32           the same in float32 (XLA and cuDNN run float32 on TF32)
#   remat               the trainer's train step at 299, bfloat16, batch 256: images/s and
#                       XLA's memory estimate without and with remat ('block')
#   deeplab_os16/os8    DeepLab v3+ (configs/deeplab_voc.py, Xception-65) train step at
#                       513, batch 8, output stride 16 and 8 (dilated depthwise)
# PARTS="timm_bf16 remat" runs only those parts (default: all). One device call may run
# at most 10 minutes, so on a GPU run it as two calls, e.g.
#   PARTS="versions timm_bf16 timm_fp32" bash benchmarks/device_run.sh $OUT
#   PARTS="remat deeplab_os16 deeplab_os8" bash benchmarks/device_run.sh $OUT
# SMOKE=1 shrinks every part (tiny widths, 71-pixel images, batch 2, one step) so the
# whole script can be rehearsed on a CPU in a few minutes; its numbers mean nothing.
set -uo pipefail
out=${1:?usage: bash benchmarks/device_run.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/.bare_deps${PYTHONPATH:+:$PYTHONPATH}"
budget=${BUDGET_S:-150}

if [[ "${SMOKE:-0}" == 1 ]]; then
  size=71; deeplab_size=65; batch=2; big_batch=4; deeplab_batch=2; steps=1; rounds=1; warm=0
  tiny=(--width_multiplier=0.0625 --num_middle_blocks=1 --num_classes=10)
  tiny_timm=(--num_classes=10)
  compile=()
else
  size=299; deeplab_size=513; batch=128; big_batch=256; deeplab_batch=8; steps=10; rounds=3; warm=2
  tiny=(); tiny_timm=(); compile=(--torch_compile)
fi

part() {  # part NAME COMMAND...: runs COMMAND under the budget, output to OUT/NAME.txt
  local name=$1; shift
  [[ -z "${PARTS:-}" || " $PARTS " == *" $name "* ]] || return 0
  echo "== $name: $*" | tee "$out/$name.txt"
  local start=$SECONDS
  timeout "$budget" "$@" >> "$out/$name.txt" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/$name.txt"
}

part versions bash -c 'nvidia-smi 2>/dev/null | head -15; python -c "
import jax, flax, optax
print(\"jax\", jax.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__)
print(jax.devices())
try:
  import torch, timm; print(\"torch\", torch.__version__, \"timm\", timm.__version__)
except ImportError as e: print(e)"'

for dtype in bfloat16 float32; do
  amp=(); [[ $dtype == bfloat16 && "${SMOKE:-0}" != 1 ]] && amp=(--torch_amp)
  short=${dtype/bfloat16/bf16}; short=${short/float32/fp32}
  part "timm_$short" python benchmarks/bench_vs_timm.py \
      --targets=train:$size --batch_size=$batch --dtype=$dtype "${amp[@]}" "${compile[@]}" \
      --impls=feature_group --repeats=$rounds --steps=$steps --warmup=$warm "${tiny_timm[@]}"
done

part remat python -m xception_jax.benchmark --config=configs/imagenet.py --mode=train \
    --image_size=$size --batch_size=$big_batch --dtype=bfloat16 --remat=none,block \
    --depthwise_impl=feature_group --steps=$steps --warmup=$warm "${tiny[@]}"

for stride in 16 8; do
  part "deeplab_os$stride" python -m xception_jax.benchmark --config=configs/deeplab_voc.py \
      --mode=train --image_size=$deeplab_size --batch_size=$deeplab_batch --dtype=bfloat16 \
      --num_classes=21 --config.model.output_stride=$stride --depthwise_impl=feature_group \
      --steps=$steps --warmup=$warm "${tiny[@]}"
done
echo "outputs in $out"

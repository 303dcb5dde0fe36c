#!/usr/bin/env bash
# The GPU paths of clf in one run (issue 12), for a machine with an NVIDIA GPU; about 5-10 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# 1. a CUDA device, seen by nvidia-smi and by PyTorch (none: one line "no CUDA device ...", exit 2, nothing run);
# 2. onnxruntime with the CUDA provider: when missing, onnxruntime-gpu is installed from wheels placed beside this
#    script (benchmarks/*.whl or benchmarks/wheels/*.whl; for machines that cannot reach a registry), else from pip;
# 3. trains the own cnn and resnet18 (no pretrained weights) for one short epoch on CUDA with AMP and channels_last,
#    and says which AMP dtype ran (bf16 where supported, else fp16);
# 4. exports each run to fp32 and --fp16 ONNX with the parity check on the CUDA provider;
# 5. `clf infer --device cuda` on each model, failing unless the provider really is CUDAExecutionProvider;
# 6. throughput against the session-only ceiling min(b, d) (benchmarks/infer_throughput.py), fp32 and fp16;
# 7. the same with TensorRT when onnxruntime has its provider.
# Everything is written under a temporary folder (GPU_CHECK_DIR to keep it), removed at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="python3"; fi
fi
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"  # seconds any one step may take; the whole run stays under 10 minutes
START=$SECONDS

say() { printf '== %s\n' "$*"; }
fail() { printf 'gpu_check: %s\n' "$*" >&2; exit 1; }

# -- 1. a CUDA device, before anything else (never fall back to the CPU) ------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! GPUS="$(nvidia-smi -L 2>/dev/null)" || [[ "$GPUS" != *GPU* ]]; then
    printf 'gpu_check: no CUDA device (nvidia-smi finds no NVIDIA GPU); run this on a machine with an NVIDIA GPU\n' >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    printf 'gpu_check: no CUDA device for PyTorch (%s sees none; a CPU-only torch build?); install a CUDA build of torch\n' \
        "$PYTHON" >&2
    exit 2
fi
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's clf, installed or not
say "GPU: $GPUS"
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"device {torch.cuda.get_device_name(0)}")
print("AMP dtype for training:", "bfloat16" if torch.cuda.is_bf16_supported() else "float16 (with loss scaling)")
EOF

# -- 2. onnxruntime's CUDA provider -------------------------------------------------------------------------------
has_provider() {
    "$PYTHON" -c "import onnxruntime as o, sys; sys.exit(0 if '$1' in o.get_available_providers() else 1)" 2>/dev/null
}
if ! has_provider CUDAExecutionProvider; then
    shopt -s nullglob
    WHEELS=("$HERE"/onnxruntime_gpu-*.whl "$HERE"/wheels/onnxruntime_gpu-*.whl)
    shopt -u nullglob
    CPU_ORT="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null || true)"
    restore_cpu_build() {  # a failed install must not leave the machine without any onnxruntime
        [[ -n "$CPU_ORT" ]] && "$PYTHON" -m pip install -q "onnxruntime==$CPU_ORT" >/dev/null 2>&1 || true
    }
    "$PYTHON" -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true  # both builds own onnxruntime/: one at a time
    if (( ${#WHEELS[@]} )); then
        say "installing onnxruntime-gpu from ${WHEELS[-1]} (and the wheels beside it)"
        "$PYTHON" -m pip install -q --no-index --find-links "$(dirname "${WHEELS[-1]}")" "${WHEELS[-1]}" \
            || { restore_cpu_build; fail "could not install ${WHEELS[-1]}; place its dependencies' wheels beside it"; }
    else
        say "installing onnxruntime-gpu from the package index"
        timeout "$STEP_TIMEOUT" "$PYTHON" -m pip install -q onnxruntime-gpu \
            || { restore_cpu_build; fail "onnxruntime-gpu is missing and pip could not fetch it; put its wheel in $HERE/wheels/"; }
    fi
    has_provider CUDAExecutionProvider \
        || fail "onnxruntime still has no CUDAExecutionProvider (CUDA/cuDNN libraries missing or mismatched?)"
fi
"$PYTHON" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, "providers:", ", ".join(o.get_available_providers()))'

WORK="${GPU_CHECK_DIR:-$(mktemp -d -t clf-gpu-check-XXXXXX)}"
[[ -n "${GPU_CHECK_DIR:-}" ]] || trap 'rm -rf "$WORK"' EXIT
clf() { timeout "$STEP_TIMEOUT" "$PYTHON" -m clf "$@"; }

# -- 3. training on CUDA: AMP + channels_last (clf does both on CUDA by default) ------------------------------------
say "sample data"
clf sample-data "$WORK/sample" --per-class 64 --test 256 --size 96 >/dev/null
declare -A SIZES=([cnn]=64 [resnet18]=224)
for arch in cnn resnet18; do
    say "train $arch @${SIZES[$arch]} on cuda (1 epoch, AMP, channels_last)"
    clf train "$WORK/sample/train" --arch "$arch" --img-size "${SIZES[$arch]}" --epochs 1 --device cuda --amp on \
        --workers 4 --out "$WORK/runs" --name "$arch" --quiet
done

# -- 4. export fp32 and fp16 with parity on the CUDA provider -------------------------------------------------------
for arch in cnn resnet18; do
    say "export $arch fp32 (parity on CUDA)"
    clf export "$WORK/runs/$arch" --onnx --device cuda
    say "export $arch fp16 (parity on CUDA)"
    clf export "$WORK/runs/$arch" --onnx --fp16 --device cuda
done

# -- 5. clf infer on CUDA, the provider checked ---------------------------------------------------------------------
infer_on() {  # model, device, expected provider
    local log="$WORK/infer.log"
    clf infer "$WORK/sample/test" --model "$1" --device "$2" --csv "$WORK/sub.csv" --quiet 2>&1 | tee "$log"
    grep -q "predicted on $3" "$log" || fail "clf infer --device $2 on $1 did not run on $3 (see above)"
}
for arch in cnn resnet18; do
    for model in model.onnx model_fp16.onnx; do
        say "clf infer $arch/$model --device cuda"
        infer_on "$WORK/runs/$arch/$model" cuda CUDAExecutionProvider
    done
done

# -- 6. throughput against the session-only ceiling ---------------------------------------------------------------
BENCH=("$PYTHON" benchmarks/infer_throughput.py --images resnet18=2000,cnn=8000 --repeats 1 --skip-torch
       --data "$WORK/bench")
say "throughput, fp32 on CUDA"
timeout "$STEP_TIMEOUT" "${BENCH[@]}" --device cuda
say "throughput, fp16 on CUDA"
timeout "$STEP_TIMEOUT" "${BENCH[@]}" --device cuda --fp16

# -- 7. TensorRT, when onnxruntime has it ---------------------------------------------------------------------------
if has_provider TensorrtExecutionProvider; then
    say "clf infer resnet18 fp32 --device tensorrt"
    infer_on "$WORK/runs/resnet18/model.onnx" tensorrt TensorrtExecutionProvider
    say "throughput, TensorRT"
    timeout "$STEP_TIMEOUT" "${BENCH[@]}" --device tensorrt --models resnet18
else
    say "TensorRT: onnxruntime has no TensorrtExecutionProvider here; skipped"
fi
say "gpu_check passed in $((SECONDS - START)) s"

#!/usr/bin/env bash
# Issue 19 on a lent H100/H200, in one go (about 9.5 minutes): the GPU tests, then the benchmarks the
# issue's targets need, then a Markdown summary of them (tools/gpu/summarize.py). Not run by CI.
#
# Prepare here first (network needed): tools/gpu/prepare.sh fills .gpu/ with the pruned onnxruntime-gpu
# and the packages the GPU machine lacks. Then, from the repository root, with the device tool:
#   run(command="bash tools/gpu/session.sh", carry=[".gpu"], timeout_s=600)
# Everything it writes is under $OUT (8 files at most come back): session.log, env.txt, pytest-gpu.txt,
# plain.json, compile.json, tuned.json, nobinding.json, summary.md. Each step has its own time limit
# within BUDGET seconds; a step cut short keeps the rows it finished (the bench saves every group).
set -u
START=$(date +%s)
BUDGET=${BUDGET:-570}
OUT=${OUT:-$PWD/artifacts/gpu-session}
WORK=${WORK:-/tmp/gpu-session}
ART=$WORK/artifacts
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
DEVICE=cuda
MODELS3="resnet18 resnet50 vgg16" MODELS2="resnet18 resnet50" MODELS_IO="resnet18 vgg16"
BATCHES="1 8 32" BIG="8 32" ENDS="1 32" COMPILE_ENGINES="onnxruntime torch-compile tensorrt"
if [ "${SMOKE:-0}" = 1 ]; then  # a dry run of this script's flow on a CPU machine: lenet5, tiny batches
    DEVICE=cpu MODELS3=lenet5 MODELS2=lenet5 MODELS_IO=lenet5 BATCHES="1 2" BIG=2 ENDS="1 2" COMPILE_ENGINES=onnxruntime
fi
mkdir -p "$OUT" "$WORK" "$ART" "$SITE"
exec > >(tee -a "$OUT/session.log") 2>&1

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME SECONDS COMMAND...: run with a limit of SECONDS (less if the budget is short), log to session.log
step() {
    local name=$1 limit=$2
    shift 2
    local t
    t=$(left)
    t=$((t - 25))  # leave time for the summary
    [ "$limit" -lt "$t" ] && t=$limit
    if [ "$t" -lt 15 ]; then
        echo "== $name: SKIPPED (out of time, $(left) s left)"
        return 0
    fi
    echo "== $name (limit ${t}s, $(left) s left) $(date -u +%T)"
    timeout -s TERM -k 10 "$t" "$@"
    local rc=$?
    echo "== $name: rc=$rc after $(($(date +%s) - START)) s"
    return 0
}

# keep NAME: the run's own results (rewritten after every group, so a run cut short keeps what it finished)
keep() {
    local f
    f=$(ls -t "$WORK/$1"/runs/*/results.json 2>/dev/null | head -n 1)
    [ -n "$f" ] && cp "$f" "$OUT/$1.json"
    return 0
}
# against: compare with the main run where it finished at least one group
against() { [ -f "$OUT/plain.json" ] && echo --baseline "$OUT/plain.json" --max-slowdown 100; }

echo "== unpacking .gpu/ into $SITE"
for archive in .gpu/*.tar.xz; do
    [ "${SMOKE:-0}" = 1 ] && break  # the archives are for the GPU machine's Python
    tar -xJf "$archive" -C "$SITE" || { echo "cannot unpack $archive"; exit 3; }
done
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 CUDA_MODULE_LOADING=LAZY
# the pruned onnxruntime-gpu holds sm_90 kernels only, and its LLM kernels are zeroed: lazy loading is required

echo "== environment" | tee "$OUT/env.txt"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    nproc
    "$PY" - <<'EOF'
import numpy as np
import onnxruntime as ort
import torch

from runtime.cudaep import nhwc_support
from runtime.sessions import SessionConfig, create_session, tensorrt_missing

print("onnxruntime", ort.__version__, ort.__file__)
print("providers built", ort.get_available_providers())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
print("nhwc", nhwc_support())
print("tensorrt", tensorrt_missing() or "available")
# the pruned provider must run real kernels and agree with the CPU: a small convolutional graph
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["y"])]
graph = helper.make_graph(nodes, "check", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 1, 1])], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
cuda, info = create_session(model, SessionConfig(device="cuda"))
cpu, _ = create_session(model, SessionConfig(device="cpu"))
got, want = cuda.run(None, {"x": x})[0], cpu.run(None, {"x": x})[0]
print("cuda session", info.providers, "read back", info.read_back.get("CUDAExecutionProvider", {}).get("prefer_nhwc"))
print("cuda vs cpu max abs diff", float(np.abs(got - want).max()))
assert np.allclose(got, want, atol=1e-2), "the CUDA provider disagrees with the CPU"
print("CUDA CHECK OK")
EOF
} 2>&1 | tee -a "$OUT/env.txt"
if ! grep -q "CUDA CHECK OK" "$OUT/env.txt" && [ "${SMOKE:-0}" != 1 ]; then
    echo "onnxruntime's CUDA provider does not work here: see env.txt; nothing measured"
    exit 4
fi

# 1. the GPU tests (torch.compile's own is left to the compile run below, which times it on real models)
step pytest 170 "$PY" -m pytest -m gpu -v -p no:cacheprovider --durations=0 \
    tests/runtime/test_sessions.py tests/runtime/bench/test_bench.py tests/runtime/bench/test_cuda_limit_gpu.py \
    tests/runtime/precision/test_fp16_search_gpu.py \
    --deselect tests/runtime/bench/test_cuda_limit_gpu.py::test_torch_compile_runs_max_autotune_on_cuda \
    2>&1 | tee "$OUT/pytest-gpu.txt"

# 2. the models of the targets, fp32 and fp16 (the bench would build them too; apart, their time is said)
for model in $MODELS3; do
    step "export-$model" 60 "$PY" -m exporter "$model" --precision fp16 --artifacts-dir "$ART"
done

BENCH=("$PY" -m runtime.bench --device "$DEVICE" --artifacts-dir "$ART" --min-samples 25 --min-seconds 0.25 --max-seconds 5)

# 3. the main run: defaults (NCHW, fp32 I/O, IO binding, CUDA graphs auto per batch), onnxruntime and
#    PyTorch eager interleaved, every graph's placement audited
step plain 150 "${BENCH[@]}" --models $MODELS3 --batch-size $BATCHES --precision fp32 fp16 \
    --engines onnxruntime pytorch --placement-audit --output "$WORK/plain"
keep plain

# 4. torch.compile (max-autotune, CUDA graphs) beside onnxruntime, and TensorRT where it is there
step compile 120 "${BENCH[@]}" --models $MODELS2 --batch-size $BATCHES --precision fp32 fp16 \
    --engines $COMPILE_ENGINES --output "$WORK/compile"
keep compile

# 5. NHWC and fp16 I/O on, against the main run (ratios with bootstrap intervals from both runs' samples)
step tuned 70 "${BENCH[@]}" --models $MODELS3 --batch-size $BIG --precision fp32 fp16 \
    --engines onnxruntime --nhwc --fp16-io --placement-audit --output "$WORK/tuned" $(against)
keep tuned

# 6. IO binding off (every run copies its input and output), against the main run
step nobinding 40 "${BENCH[@]}" --models $MODELS_IO --batch-size $ENDS --precision fp32 fp16 \
    --engines onnxruntime --no-io-binding --output "$WORK/nobinding" $(against)
keep nobinding

echo "== summary"
if [ -f "$OUT/plain.json" ]; then
    toggles=()
    for t in tuned nobinding; do [ -f "$OUT/$t.json" ] && toggles+=("$OUT/$t.json"); done
    timeout 20 "$PY" tools/gpu/summarize.py --main "$OUT/plain.json" --compile "$OUT/compile.json" \
        --toggles ${toggles[@]+"${toggles[@]}"} > "$OUT/summary.md" && cat "$OUT/summary.md"
else
    echo "no main run: nothing to summarize"
fi
echo "== done after $(($(date +%s) - START)) s"
sleep 1  # let tee finish session.log before the files go back

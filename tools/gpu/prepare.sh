#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what tools/gpu/session.sh needs on the GPU machine, which has no
# network and runs Python 3.12 with torch, onnx, numpy, rich, matplotlib, scikit-learn, pillow,
# filelock and psutil installed, but plain (CPU) onnxruntime and no pydantic or onnxsim:
#   .gpu/onnxruntime-gpu-<version>-cp312-sm90.tar.xz  the wheel of this venv's onnxruntime-gpu version,
#                                                     pruned to the H100/H200's kernels (prune_onnxruntime.py)
#   .gpu/deps-cp312.tar.xz                            pydantic, pydantic-core, annotated-types,
#                                                     typing-inspection, typing-extensions, onnxsim
# Run from the checkout the device tool sends (the session's own), with this project's venv active.
# What travels with a call is at most 64 MiB: the script says how much this makes.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$1" "${@:2}"
}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p .gpu
ORT=$(version onnxruntime-gpu)
echo "onnxruntime-gpu $ORT (this venv's) for cp312"
download "$TMP/ort" "onnxruntime-gpu==$ORT"
"$PY" tools/gpu/prune_onnxruntime.py "$TMP"/ort/onnxruntime_gpu-*.whl --output ".gpu/onnxruntime-gpu-$ORT-cp312-sm90.tar.xz"

deps=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions onnxsim; do
    deps+=("$name==$(version "$name")")
done
echo "packages: ${deps[*]}"
download "$TMP/deps" "${deps[@]}"
mkdir -p "$TMP/site"
for wheel in "$TMP"/deps/*.whl; do
    "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$TMP/site"
done
tar -C "$TMP/site" -cf - . | xz -9e -T0 -c > .gpu/deps-cp312.tar.xz

du -b .gpu/*.tar.xz
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -n 1 | cut -f1)
carried=$(du -cb .gpu | tail -n 1 | cut -f1)
total=$((tracked + ${untracked:-0} + carried))
echo "travels with a call: $((total >> 20)) MiB (tracked $((tracked >> 20)), untracked $((${untracked:-0} >> 20)), .gpu $((carried >> 20))) of 64 MiB"
[ "$total" -lt $((64 << 20)) ] || { echo "over the device tool's 64 MiB: remove untracked files or carry less"; exit 1; }

#!/usr/bin/env bash
# Everything a lent GPU machine is for, in one call: build with CUDA, run the CUDA tests (kernels
# and training engine), time the CUDA GEMMs against cuBLAS and the training step and epoch against
# PyTorch. Full logs go to $OUT (the device tool brings that folder back); the
# last lines printed are a short summary, because the tool's reply carries only the end of output.
#
#   benchmarks/gpu_session.sh                 # build + test + bench + step
#   benchmarks/gpu_session.sh build test      # any subset, in this order
#
# The device machine has python3 with torch, cupy, numpy, pybind11, scikit-build-core, cmake and
# ninja but reaches no package index, so the build uses --no-build-isolation. If pytest is missing
# there, carry it as wheels (see /work/.library/device/README.md): from the repository root here,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl pytest pluggy iniconfig packaging
# and call the tool with carry [".whl"]; this script installs them into /tmp/site.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastmlp-gpu}
mkdir -p "$OUT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test bench step)
summary=()

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  nvcc --version | tail -2
  python3 -c "import sys, numpy; print(sys.version); print('numpy', numpy.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import cupy; print('cupy', cupy.__version__)"
  python3 -c "import pytest; print('pytest', pytest.__version__)"
} >"$OUT/env.txt" 2>&1
summary+=("gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)")

for stage in "${stages[@]}"; do
  case "$stage" in
    build)
      start=$SECONDS
      if FASTMLP_CUDA=ON python3 -m pip install --no-build-isolation --no-deps --force-reinstall \
        -Cbuild-dir=build/gpu . >"$OUT/build.log" 2>&1; then
        summary+=("build: ok in $((SECONDS - start)) s")
        python3 -c "import fastmlp, json; print(json.dumps(fastmlp.build_info(), indent=1))" \
          >"$OUT/build_info.json" 2>&1
        summary+=("build_info: $(tr -d '\n' <"$OUT/build_info.json" | cut -c1-400)")
      else
        tail -40 "$OUT/build.log"
        echo "build: FAILED (full log in $OUT/build.log)"
        exit 1
      fi
      ;;
    test)
      # Run from a folder outside the checkout so that the installed package, not python/, is
      # imported (pytest's importlib mode would find the sources otherwise).
      (cd /tmp && python3 -m pytest "$OLDPWD/tests/test_cuda.py" "$OLDPWD/tests/test_cuda_engine.py" "$OLDPWD/tests/test_cuda_fused.py" \
        -q -rs -p no:cacheprovider --junitxml="$OUT/test_cuda.xml") >"$OUT/test_cuda.log" 2>&1
      rc=$?
      summary+=("test_cuda (rc $rc): $(tail -1 "$OUT/test_cuda.log")")
      if [ $rc -ne 0 ]; then
        grep -E "^(FAILED|ERROR)" "$OUT/test_cuda.log" | head -30 >"$OUT/test_cuda_failures.txt"
        summary+=("first failures:" "$(head -15 "$OUT/test_cuda_failures.txt")")
      fi
      ;;
    bench)
      python3 benchmarks/bench_cuda_gemm.py --out "$OUT/cuda_gemm.md" >"$OUT/bench_cuda_gemm.log" 2>&1
      rc=$?
      summary+=("bench_cuda_gemm (rc $rc):" "$(tail -30 "$OUT/bench_cuda_gemm.log")")
      ;;
    step)
      python3 benchmarks/bench_cuda_step.py --out "$OUT/cuda_step.md" --json "$OUT/cuda_step.json" \
        >"$OUT/bench_cuda_step.log" 2>&1
      rc=$?
      summary+=("bench_cuda_step (rc $rc):" "$(tail -12 "$OUT/bench_cuda_step.log")")
      ;;
    *)
      echo "unknown stage '$stage' (build, test, bench, step)"
      exit 2
      ;;
  esac
done

printf '%s\n' "${summary[@]}"

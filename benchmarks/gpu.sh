#!/usr/bin/env bash
# The GPU checks, in one command for a machine lent with a GPU (the device tool), from the
# repository root: install the wheels carried in .whl/ (what that machine lacks: dask,
# distributed, zarr, ...; see README "GPU"), run the tests that exercise the GPU path, then
# benchmarks/gpu.py. Logs and figures go to $OUT (default /tmp/gpu-out).
set -u -o pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c 'import torch, dask, distributed, zarr; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "dask", dask.__version__, "zarr", zarr.__version__)'; } 2>&1 | tee "$OUT/env.txt"
tests=(tests/cluster/test_local.py tests/test_torch_helpers.py)
[ -f tests/security/test_listen.py ] && tests+=(tests/security/test_listen.py)
status=0
timeout "${GPU_TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider "${tests[@]}" "$@" \
  2>&1 | tee "$OUT/pytest.log" || status=1
timeout "${GPU_BENCH_TIMEOUT:-240}" python3 benchmarks/gpu.py --out "$OUT/gpu.json" 2>&1 \
  | tail -c 20000 > "$OUT/gpu.log" || status=1
tail -c 3000 "$OUT/gpu.log"
exit $status

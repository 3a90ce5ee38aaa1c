#!/bin/sh
# Every GPU figure of benchmarks/RESULTS.md in one run on a CUDA machine that has torch, numpy, scipy
# and scikit-image (no Ray, MLflow or pymatgen needed). Each step has its own time limit so that one
# slow step cannot take the others with it; logs go to $OUT (default ./gpu-results).
#
#     sh benchmarks/gpu_session.sh            # about 6 minutes on one H100/H200
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
PY=${PYTHON:-python3}
step() { name=$1; limit=$2; shift 2; echo "== $name (limit ${limit}s): $*"
         start=$(date +%s); timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; rc=$?
         cat "$OUT/$name.txt"; echo "== $name: exit $rc after $(( $(date +%s) - start )) s"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, numpy, scipy, skimage, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'numpy', numpy.__version__, 'scipy', scipy.__version__, 'skimage', skimage.__version__)" | tee -a "$OUT/gpu.txt"
step inverse_cuda 110 $PY benchmarks/inverse.py --device cuda --sizes 128,256,512
step pytest_gpu 100 $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
     tests/mechanics/test_devices.py tests/inverse/test_gpu.py
step platelet_pcg_cuda 40 $PY benchmarks/platelet_pcg.py --device cuda --sizes 64,256,512
step mechanics_cuda 50 $PY benchmarks/mechanics.py --device cuda
step phasefield_cuda 40 $PY benchmarks/phasefield_speed.py --device cuda
step bm1a_cuda 80 $PY benchmarks/pfhub_bm1.py --case a --t-end 1e6 --device cuda --out "$OUT/bm1"
step screen_cuda 50 $PY benchmarks/screen_throughput.py --device cuda --candidates 256 --batch-size 64
# baseline for the calibration ratio: the sparse-LU CPU path on this machine's cores, same image set
step inverse_cpu512 100 $PY benchmarks/inverse.py --device cpu --solver lu --sizes 512

#!/bin/sh
# Every row of issue 18's speed table (and the other GPU figures of benchmarks/RESULTS.md) in one run on
# a CUDA machine that has torch, numpy, scipy and scikit-image (Ray + MLflow only for the optional sweep
# row). The card's name and the FFT bound come from the same run. Each step has its own time limit so one
# slow step cannot take the others with it; logs go to $OUT (default ./gpu-results).
#
#     sh benchmarks/gpu_session.sh            # under 8 minutes on one H100/H200
#     sh benchmarks/gpu_session.sh --quick    # the same rows on the CPU at small sizes: checks the script
#
# Rows (issue 18): CH step 256² × 64 and ACR step 256² × 64 as a fraction of their FFT bound, eager and
# fused (phasefield_eager / phasefield_fused); homogeneous elastic solve 256² × 64 in FFT round trips
# (mechanics); single 256² particle CH step (the "one particle" line of phasefield_*); PFHub 1a to
# t = 1e6 in float64 (bm1a); calibration 512² (inverse); screening simulator 64² per candidate (screen);
# sweep through Ray + MLflow (sweep, only when both are installed).
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
PY=${PYTHON:-python3}
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
step() { name=$1; limit=$2; shift 2; echo "== $name (limit ${limit}s): $*"
         start=$(date +%s); timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; rc=$?
         cat "$OUT/$name.txt"; echo "== $name: exit $rc after $(( $(date +%s) - start )) s"; }

$PY -c "import torch, numpy, scipy, skimage, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'numpy', numpy.__version__, 'scipy', scipy.__version__, 'skimage', skimage.__version__); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only')" | tee "$OUT/gpu.txt"
HAS_SWEEP=$($PY -c "import ray, mlflow" > /dev/null 2>&1 && echo 1 || echo 0)

if [ "$QUICK" = 1 ]; then
    step phasefield_eager 300 $PY benchmarks/phasefield_speed.py --device cpu --quick --repeats 3
    step phasefield_fused 600 $PY benchmarks/phasefield_speed.py --device cpu --quick --repeats 3 --compile
    step mechanics 300 $PY benchmarks/mechanics.py --device cpu --quick --repeats 2
    step bm1a 300 $PY benchmarks/pfhub_bm1.py --case a --t-end 10 --n 50 --device cpu --out "$OUT/bm1"
    step inverse 300 $PY benchmarks/inverse.py --device cpu --sizes 64 --bootstrap 4
    step screen 300 $PY benchmarks/screen_throughput.py --device cpu --candidates 4 --batch-size 4 --grid-points 16
    [ "$HAS_SWEEP" = 1 ] && step sweep 600 $PY benchmarks/sweep.py --candidates 4 --grid-points 16 --batch-size 4
    exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$OUT/gpu.txt"
step phasefield_eager 40 $PY benchmarks/phasefield_speed.py --device cuda
step phasefield_fused 90 $PY benchmarks/phasefield_speed.py --device cuda --compile
step pytest_gpu 60 $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/mechanics/test_devices.py tests/inverse/test_gpu.py
step mechanics_cuda 50 $PY benchmarks/mechanics.py --device cuda
step platelet_pcg_cuda 30 $PY benchmarks/platelet_pcg.py --device cuda --sizes 64,256,512
step bm1a_cuda 60 $PY benchmarks/pfhub_bm1.py --case a --t-end 1e6 --device cuda --out "$OUT/bm1"
step inverse_cuda 80 $PY benchmarks/inverse.py --device cuda --sizes 512
step screen_cuda 50 $PY benchmarks/screen_throughput.py --device cuda --candidates 256 --batch-size 64
[ "$HAS_SWEEP" = 1 ] && step sweep_cuda 60 $PY benchmarks/sweep.py --candidates 256 --grid-points 64 --batch-size 64
exit 0

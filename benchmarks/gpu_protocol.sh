#!/usr/bin/env bash
# The project's checks and measurements on one CUDA machine, in one go, within a time limit.
#
#   ETR_DATA=DATA OUT=gpu_out LIMIT_S=420 MLP_BUDGET=5000 AE_BUDGET=10000 bash benchmarks/gpu_protocol.sh
#
# Phase A (the GPU alone, timings): the CUDA tests, benchmarks/cuda_check.py (HVP cost, TR iteration
# against its autodiff floor, CPU/CUDA agreement of one step), the TR overhead by section, and time to
# 85% training accuracy of TR_rms (presets "paper" and "fast") against Adam on the Fashion-MNIST MLP.
# Phase B (many runs at once, no timings read): `etr reproduce fig4` on the Fashion-MNIST MLP (10 seeds,
# all seven methods) and on the Fashion-MNIST autoencoder (TR_uni/TR_ada/TR_rms/Adam), then the MNIST
# autoencoder's TR methods, with --jobs; the library's unit tests run beside them with CUDA visible.
# Everything it writes goes under $OUT; the run folders as $OUT/runs_*.tgz. Results: docs/paper-results.md,
# docs/benchmarks.md.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
LIMIT_S=${LIMIT_S:-420}
MLP_BUDGET=${MLP_BUDGET:-5000}
AE_BUDGET=${AE_BUDGET:-10000}
MLP_SEEDS=${MLP_SEEDS:-10}
AE_SEEDS=${AE_SEEDS:-5}
PRESET_SEEDS=${PRESET_SEEDS:-0 1 2 3 4 5}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script
UNIT=${UNIT:-1}         # 0: no unit tests in phase B
END=$(( $(date +%s) + LIMIT_S ))
mkdir -p "$OUT"
left() { echo $(( END - $(date +%s) )); }
say() { echo "== $(date +%T) ($(left) s left) $*"; }
etr() { python3 -m etr_core.cli "$@"; }

say environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

say "phase A: CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m cuda tests/core/test_optim.py \
    tests/core/test_steihaug.py tests/core/test_steihaug_device.py > "$OUT/a_cuda_tests.txt" 2>&1
tail -3 "$OUT/a_cuda_tests.txt"
say "phase A: cuda_check"
timeout 120 python3 benchmarks/cuda_check.py --reps 20 > "$OUT/a_cuda_check.txt" 2>&1
cat "$OUT/a_cuda_check.txt"
timeout 60 python3 benchmarks/bench_tr_overhead.py --device cuda --tasks mlp,ae --reps 20 --detail \
    > "$OUT/a_tr_detail.txt" 2>&1
tail -30 "$OUT/a_tr_detail.txt"
say "phase A: time to 85% training accuracy"
timeout 150 python3 benchmarks/bench_presets.py --device "$DEVICE" --seeds $PRESET_SEEDS \
    --methods "TR_rms paper" "TR_rms fast" Adam --out "$OUT/a_presets.json" > "$OUT/a_presets.txt" 2>&1
cat "$OUT/a_presets.txt"

say "phase B: reproduce runs (no timings read)"
(
  timeout -k 30 $(( $(left) - 40 )) python3 -m etr_core.cli reproduce fig4 --dataset fashion_mnist --networks mlp \
      --seeds "$MLP_SEEDS" --budget "$MLP_BUDGET" --device "$DEVICE" --jobs 7 --out "$OUT/r_mlp" --no-progress \
      > "$OUT/b_mlp.txt" 2>&1
  timeout -k 30 $(( $(left) - 40 )) python3 -m etr_core.cli reproduce fig3 --dataset mnist --networks autoencoder \
      --seeds 3 --budget "$AE_BUDGET" --device "$DEVICE" --jobs 7 --out "$OUT/r_mnist_ae" --no-progress \
      > "$OUT/b_mnist_ae.txt" 2>&1
) &
timeout -k 30 $(( $(left) - 40 )) python3 -m etr_core.cli reproduce fig4 --dataset fashion_mnist \
    --networks autoencoder --methods TR_uni,TR_ada,TR_rms,Adam --seeds "$AE_SEEDS" --budget "$AE_BUDGET" \
    --device "$DEVICE" --jobs 6 --out "$OUT/r_fmnist_ae" --no-progress > "$OUT/b_fmnist_ae.txt" 2>&1 &
[ "$UNIT" = 1 ] && timeout $(( $(left) - 60 )) python3 -m pytest -q -rf -p no:cacheprovider -n 2 --timeout 120 tests/core \
    > "$OUT/b_unit_tests.txt" 2>&1 &
wait
say "phase B done"
tail -5 "$OUT/b_unit_tests.txt"
for f in b_mlp b_fmnist_ae b_mnist_ae; do echo "-- $f"; grep -E "^\| |^- TR_rms|Error|error" "$OUT/$f.txt" | head -20; done
grep -E "passed|failed|FAILED|ERROR" "$OUT/b_unit_tests.txt" | tail -15
# what comes back: the logs and the run folders without checkpoints and first-order step logs
for d in r_mlp r_fmnist_ae r_mnist_ae; do
  [ -d "$OUT/$d" ] && tar czf "$OUT/runs_$d.tgz" --exclude='checkpoint*.pt' --exclude='.lock' \
      --exclude='*_lr*/seed*/metrics.jsonl' -C "$OUT" "$d" && rm -rf "${OUT:?}/$d"
done
(cd "$OUT" && tar czf logs.tgz ./*.txt ./*.json && rm -f ./*.txt ./*.json)
ls -la "$OUT"
say end

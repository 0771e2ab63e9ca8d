#!/usr/bin/env bash
# The project's checks and measurements on one CUDA machine, in one go, within a time limit.
#
#   ETR_DATA=DATA OUT=gpu_out LIMIT_S=420 bash benchmarks/gpu_protocol.sh
#   ETR_DATA=DATA PHASES="tests cg_loops presets ae" AE_METHODS=TR_rms,TR_ada AE_BUDGET=5000 \
#       bash benchmarks/gpu_protocol.sh
#
# PHASES (default: all), run in this order; the first three have the GPU alone (timings):
#   tests     the CUDA tests
#   cg_loops  TR iteration against its autodiff floor (bench_tr_overhead.py, MLP and autoencoder) with
#             the three CG loops: host reads per iteration, eager device loop, compiled device loop
#   presets   time to 85% training accuracy, TR_rms presets "paper" and "fast" against Adam, Fashion-MNIST MLP
#   mlp       etr reproduce fig4, Fashion-MNIST MLP, all seven methods (MLP_SEEDS, MLP_BUDGET)
#   ae        etr reproduce fig4, Fashion-MNIST autoencoder (AE_METHODS, AE_SEEDS, AE_BUDGET)
#   mnist_ae  etr reproduce fig3, MNIST autoencoder, TR methods, 3 seeds (after mlp)
#   unit      the unit tests (tests/core) with CUDA visible
# mlp, ae, mnist_ae and unit run at the same time (--jobs; their seconds are not timings). Everything
# goes under $OUT; the run folders come back as $OUT/runs_*.tgz, the logs as $OUT/logs.tgz.
# Results: docs/paper-results.md, docs/benchmarks.md.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
LIMIT_S=${LIMIT_S:-420}
PHASES=${PHASES:-tests cg_loops presets mlp ae mnist_ae unit}
MLP_BUDGET=${MLP_BUDGET:-5000}
MLP_SEEDS=${MLP_SEEDS:-10}
AE_BUDGET=${AE_BUDGET:-10000}
AE_SEEDS=${AE_SEEDS:-5}
AE_METHODS=${AE_METHODS:-TR_uni,TR_ada,TR_rms,Adam}
AE_JOBS=${AE_JOBS:-6}
PRESET_SEEDS=${PRESET_SEEDS:-0 1 2 3 4 5}
CG_LOOPS=${CG_LOOPS:-host device auto}
RUN_CG_LOOP=${RUN_CG_LOOP:-auto}  # ETR_CG_LOOP of the parallel runs (device: no compilation per process)
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script
END=$(( $(date +%s) + LIMIT_S ))
mkdir -p "$OUT"
left() { echo $(( END - $(date +%s) )); }
until_end() { local t=$(( $(left) - $1 )); [ "$t" -gt 5 ] && echo "$t" || echo 5; }  # seconds, leaving $1
say() { echo "== $(date +%T) ($(left) s left) $*"; }
want() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

say environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if want tests; then
  say "CUDA tests"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/core/test_optim.py \
      tests/core/test_steihaug.py tests/core/test_steihaug_device.py > "$OUT/a_cuda_tests.txt" 2>&1
  tail -3 "$OUT/a_cuda_tests.txt"
fi
if want cg_loops; then
  for loop in $CG_LOOPS; do
    say "TR iteration / autodiff floor, CG loop $loop (auto = compiled)"
    ETR_CG_LOOP=$loop timeout 120 python3 benchmarks/bench_tr_overhead.py --device "$DEVICE" --tasks mlp,ae \
        --reps 15 > "$OUT/a_overhead_$loop.txt" 2>&1
    grep -iE "ratio|iteration|floor" "$OUT/a_overhead_$loop.txt" | tail -6
  done
fi
if want presets; then
  say "time to 85% training accuracy"
  timeout 200 python3 benchmarks/bench_presets.py --device "$DEVICE" --seeds $PRESET_SEEDS \
      --methods "TR_rms paper" "TR_rms fast" Adam --out "$OUT/a_presets.json" > "$OUT/a_presets.txt" 2>&1
  cat "$OUT/a_presets.txt"
fi

say "parallel runs (no timings read)"
if want mlp; then
  (
    ETR_CG_LOOP=$RUN_CG_LOOP timeout -k 30 "$(until_end 40)" python3 -m etr_core.cli reproduce fig4 \
        --dataset fashion_mnist --networks mlp --seeds "$MLP_SEEDS" --budget "$MLP_BUDGET" --device "$DEVICE" --jobs 7 \
        --out "$OUT/r_mlp" --no-progress > "$OUT/b_mlp.txt" 2>&1
    want mnist_ae && timeout -k 30 "$(until_end 40)" python3 -m etr_core.cli reproduce fig3 --dataset mnist \
        --networks autoencoder --seeds 3 --budget "$AE_BUDGET" --device "$DEVICE" --jobs 7 \
        --out "$OUT/r_mnist_ae" --no-progress > "$OUT/b_mnist_ae.txt" 2>&1
  ) &
fi
if want ae; then
  ETR_CG_LOOP=$RUN_CG_LOOP timeout -k 30 "$(until_end 40)" python3 -m etr_core.cli reproduce fig4 --dataset fashion_mnist \
      --networks autoencoder --methods "$AE_METHODS" --seeds "$AE_SEEDS" --budget "$AE_BUDGET" \
      --device "$DEVICE" --jobs "$AE_JOBS" --out "$OUT/r_fmnist_ae" --no-progress > "$OUT/b_fmnist_ae.txt" 2>&1 &
fi
if want unit; then
  timeout "$(until_end 60)" python3 -m pytest -q -rf -p no:cacheprovider -n 2 --timeout 120 tests/core \
      > "$OUT/b_unit_tests.txt" 2>&1 &
fi
wait
say "parallel runs done"
[ -f "$OUT/b_unit_tests.txt" ] && grep -E "passed|failed|FAILED|ERROR" "$OUT/b_unit_tests.txt" | tail -15
for f in b_mlp b_fmnist_ae b_mnist_ae; do
  [ -f "$OUT/$f.txt" ] && { echo "-- $f"; grep -E "^\| |^- TR_rms|Error" "$OUT/$f.txt" | head -20; }
done
# what comes back: the logs and the run folders without checkpoints and first-order step logs
for d in r_mlp r_fmnist_ae r_mnist_ae; do
  [ -d "$OUT/$d" ] && tar czf "$OUT/runs_$d.tgz" --exclude='checkpoint*.pt' --exclude='.lock' \
      --exclude='*_lr*/seed*/metrics.jsonl' -C "$OUT" "$d" && rm -rf "${OUT:?}/$d"
done
(cd "$OUT" && tar czf logs.tgz ./*.txt ./*.json 2>/dev/null; rm -f ./*.txt ./*.json)
ls -la "$OUT"
say end

#!/usr/bin/env bash
# srlab's GPU check: one script, at most 8 minutes on one GPU, every step under its own `timeout`.
#
#   bash scripts/gpu_check.sh [options] [OUT_DIR]        # or: make gpu-check
#
# Runs in the machine's own Python environment and keeps its torch: srlab is installed with
# `pip install --no-deps -e .` and only the missing non-torch requirements are added. Steps:
#   setup      versions (Python, torch, CUDA, cuDNN, driver, every requirement); the install
#   data       a DIV2K-layout stand-in (photo crops), and a Set5 stand-in unless Set5 is found
#   bench_*    python -m srlab.bench at the paper's shapes (x2: batch 64 of LR 64; x4: batch 64 of
#              LR 32), fp32/TF32, bf16, and bf16 + torch.compile; x4 256² / 512² inference; loader
#   train      train.py experiment=paper_x2 on the stand-in, bf16, Lightning's simple profiler,
#              nvidia-smi sampled in the background: step time, data wait, GPU utilisation
#   eval_*     eval.py on Set5 on the GPU and on the CPU (same PSNR to 0.01 dB)
#   tiled      peak GPU memory of whole vs tiled inference at LR 1024² and 2048²
#   dynconv    dynamic vs dense 3x3 convolution time
# and writes OUT_DIR/report.json and OUT_DIR/report.md (logs/ holds each step's output).
#
# Options:
#   --dry-run              (or DEVICE=cpu) the same steps on the CPU at tiny sizes, to test the flow
#   --benchmark-root DIR   a folder holding Set5/ (default: data/benchmark if it has Set5, else a stand-in)
#   --python PY            the interpreter (default: $PYTHON, else python3)
#   --no-install / --install   skip / do the pip installs (default: install, except in a dry run)
#   --budget SECONDS       the whole check's time limit (default 480; dry run 900, with 3x step timeouts,
#                          as a small shared CPU can be slow)
# OUT_DIR defaults to $OUT, else ./gpu_check. WHEELHOUSE=DIR installs missing requirements offline.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
[ "${DEVICE:-}" = cpu ] && DRY_RUN=1
INSTALL=""
BENCH_ROOT=""
PY="${PYTHON:-}"
BUDGET=""
OUT_ARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --benchmark-root) BENCH_ROOT="$2"; shift ;;
    --python) PY="$2"; shift ;;
    --install) INSTALL=1 ;;
    --no-install) INSTALL=0 ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT_ARG="$1" ;;
  esac
  shift
done
if [ -z "$PY" ]; then
  PY="$(command -v python3 || command -v python)" || { echo "gpu_check.sh: no python3 or python found" >&2; exit 2; }
fi
OUT_DIR="${OUT_ARG:-${OUT:-./gpu_check}}"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/bench" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [ "$DRY_RUN" = 1 ]; then
  MODE=dry-run; DEV=cpu; BUDGET="${BUDGET:-900}"; INSTALL="${INSTALL:-0}"; CAP_SCALE=3
else
  MODE=gpu; DEV=cuda; BUDGET="${BUDGET:-480}"; INSTALL="${INSTALL:-1}"; CAP_SCALE=1
fi
if [ -n "$BENCH_ROOT" ]; then
  BENCH_ROOT="$(cd "$BENCH_ROOT" && pwd)" || exit 2
  BENCHMARKS="$BENCH_ROOT"
elif [ -d "$REPO/data/benchmark/Set5" ]; then
  BENCHMARKS="$REPO/data/benchmark"
else
  BENCHMARKS="$OUT_DIR/data/benchmark"
fi

cd "$REPO" || exit 2
# No update checks or uploads from a machine that may be offline.
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
START=$SECONDS
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
DEADLINE=$((START + BUDGET))
REPORT_RESERVE=15
: > "$OUT_DIR/status.tsv"
FAILED=0

# run_step NAME TIMEOUT COMMAND...: runs COMMAND under `timeout` (its own limit, cut to what is left of
# the budget), logs to logs/NAME.log, appends "name state rc seconds timeout command" to status.tsv.
run_step() {
  local name=$1 cap=$(($2 * CAP_SCALE))
  shift 2
  local left=$((DEADLINE - REPORT_RESERVE - SECONDS))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 5 ]; then
    printf '%s\tskipped\t\t0\t%s\t%s\n' "$name" "$cap" "$*" >> "$OUT_DIR/status.tsv"
    echo "[gpu-check] $name: skipped, the ${BUDGET} s budget is spent"
    FAILED=1
    return 1
  fi
  echo "[gpu-check] $name (timeout ${limit} s): $*"
  local t0=$SECONDS rc state=ok
  timeout --kill-after=5 "$limit" "$@" > "$OUT_DIR/logs/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then state=timeout; elif [ $rc -ne 0 ]; then state=failed; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$state" "$rc" "$((SECONDS - t0))" "$limit" "$*" >> "$OUT_DIR/status.tsv"
  echo "[gpu-check] $name: $state in $((SECONDS - t0)) s (logs/$name.log)"
  [ "$state" = ok ] || { FAILED=1; tail -n 5 "$OUT_DIR/logs/$name.log" | sed 's/^/    /'; return 1; }
}

CHECK=("$PY" scripts/gpu_check.py --out "$OUT_DIR")
if [ "$INSTALL" = 1 ]; then INSTALL_FLAG=--install; else INSTALL_FLAG=--no-install; fi
run_step setup 120 "${CHECK[@]}" setup "$INSTALL_FLAG" ${WHEELHOUSE:+--wheelhouse "$WHEELHOUSE"}
# The steps below find srlab (and scripts/step_profiler.py) even where the install failed.
export PYTHONPATH="$REPO:$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = gpu ]; then
  IMAGES=32; TRAIN_STEPS=300
  DATA_ARGS=(--images "$IMAGES" --hr-size 400)
  BENCH=(-m srlab.bench --device cuda)
  X2=(--batch 64 --patch 64 --scale 2)
  X4=(--batch 64 --patch 32 --scale 4)
  TRAIN_ARGS=(trainer=gpu)
  TILED_ARGS=(--device cuda --sizes 1024 2048 --tile 200)
  DYNCONV_ARGS=(--device cuda --batch 64 --train-size 64 --infer-size 64)
  NO_COMPILE=()
else
  IMAGES=4; TRAIN_STEPS=8
  DATA_ARGS=(--images "$IMAGES" --hr-size 96 --set5-shrink 4)
  BENCH=(-m srlab.bench --device cpu --threads 1 --repeats 1 --warmup 0 --infer-sizes 64 --loader-seconds 0.5)
  X2=(--batch 2 --patch 16 --scale 2)
  X4=(--batch 2 --patch 8 --scale 4)
  TRAIN_ARGS=(trainer=cpu data.patch_size=32 data.batch_size=4 data.num_workers=0)
  TILED_ARGS=(--device cpu --sizes 48 64 --tile 32)
  DYNCONV_ARGS=(--device cpu --batch 2 --train-size 16 --infer-size 16 --warmup 1 --repeats 2)
  # inductor's C++ build takes minutes on a small CPU: the dry run exercises the compiled steps' flow only.
  NO_COMPILE=(env TORCH_COMPILE_DISABLE=1)
fi
run_step data 60 "${CHECK[@]}" data "${DATA_ARGS[@]}" ${BENCH_ROOT:+--benchmark-root "$BENCH_ROOT"}

run_step bench_x2_fp32 60 "$PY" "${BENCH[@]}" "${X2[@]}" --dtype fp32 --parts train infer \
  --json "$OUT_DIR/bench/x2_fp32.json"
run_step bench_x2_bf16 60 "$PY" "${BENCH[@]}" "${X2[@]}" --dtype bf16 --parts train infer \
  --json "$OUT_DIR/bench/x2_bf16.json"
run_step bench_x4_fp32 40 "$PY" "${BENCH[@]}" "${X4[@]}" --dtype fp32 --parts train --json "$OUT_DIR/bench/x4_fp32.json"
run_step bench_x4_bf16 40 "$PY" "${BENCH[@]}" "${X4[@]}" --dtype bf16 --parts train --json "$OUT_DIR/bench/x4_bf16.json"
run_step bench_loader 30 "$PY" "${BENCH[@]}" "${X2[@]}" --parts loader --json "$OUT_DIR/bench/loader.json"

TRAIN_DIR="$OUT_DIR/train"
SMI_PID=""
if [ "$MODE" = gpu ] && command -v nvidia-smi > /dev/null; then
  mkdir -p "$TRAIN_DIR"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw \
    --format=csv,noheader,nounits -lms 250 > "$TRAIN_DIR/nvidia_smi.csv" 2> /dev/null &
  SMI_PID=$!
  trap 'kill "$SMI_PID" 2> /dev/null' EXIT  # the sampler never outlives the check
fi
run_step train 120 "$PY" train.py experiment=paper_x2 "${TRAIN_ARGS[@]}" trainer.precision=bf16-mixed \
  "data.root='$OUT_DIR/data/DIV2K'" "data.benchmark_root='$BENCHMARKS'" "data.data_range=[1,$IMAGES]" \
  "data.val_sets=[Set5]" data.steps_per_epoch=$TRAIN_STEPS trainer.max_steps=$TRAIN_STEPS trainer.max_epochs=1 \
  summary=false callbacks.progress_bar=null callbacks.comparison_images=null \
  +trainer.profiler._target_=step_profiler.StepRecordingProfiler "+trainer.profiler.dirpath='$TRAIN_DIR/profile'" \
  +trainer.profiler.filename=profile "hydra.run.dir='$TRAIN_DIR/run'"
if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2> /dev/null; wait "$SMI_PID" 2> /dev/null; fi
run_step train_summary 30 "${CHECK[@]}" train-summary --run-dir "$TRAIN_DIR/run" --profile-dir "$TRAIN_DIR/profile" \
  ${SMI_PID:+--smi-csv "$TRAIN_DIR/nvidia_smi.csv"}

EVAL=("$PY" eval.py "ckpt_path='$TRAIN_DIR/run/checkpoints/last.ckpt'" "datasets=[Set5]" "scales=[2]"
  "benchmark_root='$BENCHMARKS'" figures.enabled=false)
run_step eval_gpu 60 "${EVAL[@]}" device=$DEV "hydra.run.dir='$OUT_DIR/eval/gpu'"
run_step eval_cpu 90 "${EVAL[@]}" device=cpu "hydra.run.dir='$OUT_DIR/eval/cpu'"
run_step eval_compare 20 "${CHECK[@]}" eval-compare --gpu-dir "$OUT_DIR/eval/gpu" --cpu-dir "$OUT_DIR/eval/cpu"

run_step tiled 90 "${CHECK[@]}" tiled "${TILED_ARGS[@]}"
run_step dynconv 45 "${CHECK[@]}" dynconv "${DYNCONV_ARGS[@]}"

# Compiled last: the compilation takes the longest, and a step cut short by the budget costs least here.
run_step bench_x2_bf16_compiled 180 ${NO_COMPILE[@]+"${NO_COMPILE[@]}"} "$PY" "${BENCH[@]}" "${X2[@]}" --dtype bf16 --compile \
  --parts train infer --json "$OUT_DIR/bench/x2_bf16_compiled.json"
run_step bench_x4_bf16_compiled 150 ${NO_COMPILE[@]+"${NO_COMPILE[@]}"} "$PY" "${BENCH[@]}" "${X4[@]}" --dtype bf16 --compile \
  --parts train --json "$OUT_DIR/bench/x4_bf16_compiled.json"

timeout 60 "${CHECK[@]}" report --mode "$MODE" --started "$STARTED" --seconds $((SECONDS - START)) \
  || { echo "[gpu-check] report: failed" >&2; exit 1; }
echo "[gpu-check] done in $((SECONDS - START)) s; $([ $FAILED = 0 ] && echo 'every step ok' || echo 'some steps failed')"
exit $FAILED

#!/usr/bin/env bash
# The device check: everything a fresh GPU machine should run, in under 8 minutes, into one JSON.
#
#   benchmarks/gpu_check.sh                  # on a CUDA machine, from the repository root
#   benchmarks/gpu_check.sh --cpu-dry-run    # the same pipeline on the CPU with tiny sizes
#   PYTHON=/path/to/python benchmarks/gpu_check.sh
#
# Parts, each with a time limit (cut to what is left of GPU_CHECK_BUDGET_S, default 450 s):
#   weights      recipe weights under the real names, into a temporary directory
#   tests        pytest -m cuda (dtype and device checks)
#   conformance  tests/reference_check.py, every fixture case, exact mode on the GPU
#   step_time    benchmarks/step_time.py at 512x512 and 1280x768, cutn_batches 4, median of 3 steps:
#                ours fast, ours exact, the reference (fp16 UNet); s/step, ratios, peak memory
#   end_to_end   benchmarks/end_to_end.py: the default image (1280x768, 250 steps, skip 10), fast mode
#   fast_psnr    benchmarks/fast_psnr.py at 512x512: fast against exact, same seed
# then benchmarks/gpu_summary.py writes benchmarks/results/gpu_check-<device>-<date>.json and
# prints each target with pass/fail. A dry run writes its JSON under $TMPDIR (default /tmp).
# Exit status: 0 when every part ran and passed its own checks (targets are reported, not enforced).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DRY_RUN=0
case "${1:-}" in
  --cpu-dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--cpu-dry-run]" >&2; exit 2 ;;
esac

UNET=512x512_diffusion_uncond_finetune_008100
if (( DRY_RUN )); then
  export CUDA_VISIBLE_DEVICES=""
  TOTAL_S=${GPU_CHECK_BUDGET_S:-900}
  SCALE=2  # the parts' time limits, doubled: 2 shared CPU cores are slow
  STEP_SIZES=(64x64)
  STEP_ARGS=(--cutn_batches 1 --warmup 1 --measure 1)
  CONFORMANCE_ARGS=(--device cpu --only unet,sec,ddim_eta0.8)
  TINY=(--size 64x64 --steps 3 --skip_steps 1 --cutn_batches 1)
  E2E_ARGS=("${TINY[@]}")
  PSNR_ARGS=("${TINY[@]}")
  OUT_DIR=${TMPDIR:-/tmp}
  SUMMARY_ARGS=(--dry-run)
else
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU (see --cpu-dry-run)")'
  TOTAL_S=${GPU_CHECK_BUDGET_S:-450}
  SCALE=1
  STEP_SIZES=(512x512 1280x768)
  STEP_ARGS=(--cutn_batches 4 --warmup 1 --measure 3)
  CONFORMANCE_ARGS=(--device cuda)
  E2E_ARGS=()
  PSNR_ARGS=(--size 512x512 --steps 50 --skip_steps 5 --cutn_batches 4)
  OUT_DIR=benchmarks/results
  SUMMARY_ARGS=()
fi
if ! "$PYTHON" -c 'import guided_diffusion' 2>/dev/null; then
  echo "the reference is missing: $PYTHON -m pip install --no-deps -r benchmarks/requirements.txt" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS

# run NAME LIMIT_S COMMAND...: one part, its output in $WORK/NAME.log and "NAME rc seconds" in
# $WORK/parts.tsv; a failing part does not stop the ones after it.
run() {
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  local left=$((TOTAL_S - (SECONDS - START)))
  if ((left < limit)); then limit=$left; fi
  if ((limit <= 0)); then
    printf '%s\tskipped\t0\n' "$name" >>"$WORK/parts.tsv"
    echo "== $name: skipped, no time left"
    return
  fi
  echo "== $name (at most ${limit} s)"
  local began=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - began))" >>"$WORK/parts.tsv"
  tail -n 2 "$WORK/$name.log"
}

run weights 90 "$PYTHON" tests/make_test_weights.py "$WORK/models" \
  --models "$UNET.pt" secondary_model_imagenet_2.pth open_clip_rn50_openai.safetensors
run tests 120 env DISCO_TEST_MODEL_DIR="$WORK/models" \
  "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$WORK/pytest.xml"
run conformance 90 "$PYTHON" tests/reference_check.py tests/fixtures/reference "${CONFORMANCE_ARGS[@]}"
run step_time 200 "$PYTHON" benchmarks/step_time.py --sizes "${STEP_SIZES[@]}" "${STEP_ARGS[@]}" \
  --weights "$WORK/models/$UNET.pt" --out "$WORK"
run end_to_end 150 "$PYTHON" benchmarks/end_to_end.py "$WORK/models" "${E2E_ARGS[@]}" --out "$WORK/end_to_end.json"
run fast_psnr 120 "$PYTHON" benchmarks/fast_psnr.py "${PSNR_ARGS[@]}" --out "$WORK"

echo "== all parts: $((SECONDS - START)) s"
"$PYTHON" benchmarks/gpu_summary.py "$WORK" --out-dir "$OUT_DIR" "${SUMMARY_ARGS[@]}"

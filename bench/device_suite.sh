#!/usr/bin/env bash
# One prepared accelerator run: install what the machine lacks, then benchmark the train step,
# the sampler, latency against batch, the text-to-audio pipeline and `magnet-jax plan`'s
# prediction at the released model sizes (magnet-small and magnet-medium shapes, random weights,
# bfloat16 and float32), inside a time budget, and write every figure with the device's name.
#
#   bash bench/device_suite.sh                      # on a GPU / TPU machine: 8 minutes at most
#   bash bench/device_suite.sh --smoke              # tiny shapes on CPU, one benchmark of each kind
#   bash bench/device_suite.sh --wheels .whl        # install missing packages from carried wheels
#   bash bench/device_suite.sh --out DIR --budget 300
#
# Why one script: accelerator time comes rarely and in short slots, so nothing may be decided
# on the machine. GPU images with JAX already installed (the lent ones: Python 3.12, jax 0.11
# with its CUDA plugin, flax, optax, orbax) are reused as they are: the project is installed
# with --no-deps and only the packages that are missing come from --wheels (no network there).
# A machine whose JAX sees no accelerator gets `pip install -e ".[cuda,test]"` (or [tpu]).
#
# Each benchmark runs under its own timeout, in priority order, and is skipped (with the reason
# recorded) when the budget left is too small or an import it needs is missing; a failure is
# recorded and the suite goes on. Output: OUT/device_suite_<device>.json (every figure, the
# device, versions, what was skipped and why) and the raw files in OUT/device_suite_<device>/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
SMOKE=0
OUT="$ROOT/bench/results"
WHEELS=""
BUDGET=480
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "device_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "device_suite.sh: --budget $BUDGET is not a number of seconds" >&2; exit 2 ;; esac
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if [ "$SMOKE" = 1 ]; then
  export JAX_PLATFORMS=cpu        # the smoke run must work on a machine without an accelerator
fi

log() { echo "[device_suite $(( $(date +%s) - START ))s] $*" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# ---------------------------------------------------------------- 1. install what is missing
# one Python start answers everything: "<backend> <installed 0|1> <missing pip names...>" and,
# on a second line, the first device's kind
preflight() {
  "$PY" - <<'EOF' 2>/dev/null || printf 'none 0\nunknown\n'
import importlib.metadata, importlib.util
needs = {"jax": "jax", "flax": "flax", "optax": "optax", "orbax": "orbax-checkpoint", "numpy": "numpy",
         "scipy": "scipy", "yaml": "pyyaml", "tqdm": "tqdm", "matplotlib": "matplotlib",
         "safetensors": "safetensors", "sentencepiece": "sentencepiece", "tokenizers": "tokenizers",
         "huggingface_hub": "huggingface_hub", "soundfile": "soundfile", "soxr": "soxr", "librosa": "librosa",
         "grain": "grain", "array_record": "array-record", "tensorflow_datasets": "tensorflow-datasets",
         "absl": "absl-py", "tensorboardX": "tensorboardX", "pytest": "pytest"}
missing = [pip for mod, pip in needs.items() if importlib.util.find_spec(mod) is None]
try:
    importlib.metadata.version("magnet-jax")
    installed = 1
except importlib.metadata.PackageNotFoundError:
    installed = 0
try:
    import jax
    backend, device = jax.default_backend(), jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
except Exception:     # noqa: BLE001 - no jax, or a broken one: installed below
    backend, kind = "none", "unknown"
print(backend, installed, *missing)
print(kind)
EOF
}
check() {
  local pre
  pre="$(preflight)"
  read -r backend installed missing <<< "$(head -n 1 <<< "$pre")"
  DEVICE="$(sed -n 2p <<< "$pre")"
}
check
log "python: $("$PY" --version 2>&1); jax backend: $backend; missing: ${missing:-nothing}"
if [ "$backend" = none ] || { [ "$backend" = cpu ] && [ "$SMOKE" = 0 ]; }; then
  extra=cuda
  if [ -e /dev/accel0 ] || [ -n "${TPU_NAME:-}" ]; then extra=tpu; fi
  log "JAX sees no accelerator: pip install -e .[$extra,test]"
  "$PY" -m pip install -q -e ".[$extra,test]" || log "pip install -e .[$extra,test] failed"
  check
fi
if [ -n "$missing" ] && [ -n "$WHEELS" ]; then
  log "installing from $WHEELS: $missing"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" $missing || log "some wheels were not in $WHEELS"
fi
if [ "$installed" != 1 ]; then
  log "pip install --no-deps -e . (reusing the installed jax, flax and the rest)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . || log "the project could not be installed; running from the checkout"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

SLUG="$(echo "$DEVICE" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '_' | sed 's/_*$//')"
[ "$SMOKE" = 1 ] && SLUG="${SLUG}_smoke"
RAW="$OUT/device_suite_$SLUG"
mkdir -p "$RAW"
STATUS="$RAW/status.tsv"           # name, status, seconds, detail (one line per benchmark)
: > "$STATUS"
log "device: $DEVICE; results in $RAW"

# ---------------------------------------------------------------- 2. the benchmarks
# shapes: released sizes on an accelerator, tiny ones for --smoke
if [ "$SMOKE" = 1 ]; then
  SMALL=(64 4 2); MEDIUM=(96 4 3); TRAIN_BATCH=(1 1); SECONDS_=1; STEPS="2,1,1,1"; LAT_BATCHES="1"
else
  SMALL=(1024 16 24); MEDIUM=(1536 24 48); TRAIN_BATCH=(8 4); SECONDS_=10; STEPS="20,10,10,10"; LAT_BATCHES="1 4 16"
fi

# run NAME MIN_SECONDS NEEDS CMD...: skip when less than MIN_SECONDS are left or a module in NEEDS
# (comma-separated) cannot be imported; the command gets the budget left as its timeout
run() {
  local name="$1" min="$2" needs="$3"; shift 3
  local t0 rc remaining
  remaining=$(left)
  if [ "$remaining" -lt "$min" ]; then
    printf '%s\tskipped\t0\tbudget: %ss left, needs about %ss\n' "$name" "$remaining" "$min" >> "$STATUS"
    log "skip $name (budget)"; return 0
  fi
  if [ -n "$needs" ] && ! "$PY" -c "import ${needs}" 2>/dev/null; then
    printf '%s\tskipped\t0\tmissing module(s): %s\n' "$name" "$needs" >> "$STATUS"
    log "skip $name (missing $needs)"; return 0
  fi
  log "run $name"
  t0=$(date +%s)
  timeout "$remaining" "$@" > "$RAW/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    printf '%s\tok\t%s\t\n' "$name" "$took" >> "$STATUS"
  else
    printf '%s\tfailed\t%s\texit %s: %s\n' "$name" "$took" "$rc" "$(tail -n 1 "$RAW/$name.log" | tr '\t' ' ' | cut -c1-300)" >> "$STATUS"
    log "$name failed (exit $rc); see $RAW/$name.log"
  fi
}

train_step() {   # NAME DIM HEADS LAYERS BATCH DTYPE [bench_train.py options...]
  run "$1" 30 "" "$PY" bench/bench_train.py --dim "$2" --heads "$3" --layers "$4" --batch "$5" --dtype "$6" \
    --steps 3 --no-reference --out "$RAW/$1.json" "${@:7}"
}

sampler() {      # NAME DIM HEADS LAYERS BATCH DTYPE: magnet-jax sample on random weights, 3 calls
  local name="$1" dim="$2" heads="$3" layers="$4" batch="$5" dtype="$6"
  run "$name" 30 "" "$PY" -m magnet_jax.cli sample --config configs/bench_lm.py --out "$RAW/$name" \
    "lm.dim=$dim" "lm.num_heads=$heads" "lm.num_layers=$layers" "lm.ffn_dim=$((4 * dim))" "lm.frame_rate=50" \
    "lm.segment_duration=$SECONDS_" "lm.compute_dtype=$dtype" "sampler.decoding_steps=$STEPS" \
    "batch_size=$batch" "num_samples=$((3 * batch))"
}

# the prediction runs on the host CPUs while the accelerator benchmarks run: configs/magnet_small.py
# at the train benchmark's batch, T (48 Hz x 10 s) and text length, on this one device
plan_pid=""
if [ "$(left)" -gt 60 ]; then
  kind="$(echo "$SLUG" | grep -oE 'h100|h200|a100|v4|v5e' | head -n 1)"
  plan_args=(--config configs/magnet_small.py --devices 1 --mesh data=1
             --device-kind "${kind:-h100}" --no-sampler --out "$RAW/plan_small.json"
             "train.batch_size=${TRAIN_BATCH[0]}" optim.optimizer=adamw optim.ema_decay=0 lm.frame_rate=48
             text.max_tokens=8)
  if [ "$SMOKE" = 1 ]; then
    plan_args+=("lm.dim=${SMALL[0]}" "lm.num_heads=${SMALL[1]}" "lm.num_layers=${SMALL[2]}"
                "lm.ffn_dim=$((4 * SMALL[0]))" "lm.segment_duration=$SECONDS_")
  fi
  log "plan (in the background, on the CPUs): ${plan_args[*]}"
  (JAX_PLATFORMS=cpu timeout "$(left)" "$PY" -m magnet_jax.cli plan "${plan_args[@]}" > "$RAW/plan_small.log" 2>&1
   echo $? > "$RAW/plan_small.rc") &
  plan_pid=$!
fi

# in priority order; --smoke runs one benchmark of each kind (the others differ only in shape)
train_step train_small_bfloat16 "${SMALL[@]}" "${TRAIN_BATCH[0]}" bfloat16
sampler sampler_small_bfloat16 "${SMALL[@]}" 1 bfloat16
for b in $LAT_BATCHES; do
  [ "$b" = 1 ] && continue          # batch 1 is sampler_small_bfloat16
  sampler "latency_small_bfloat16_batch$b" "${SMALL[@]}" "$b" bfloat16
done
if [ "$SMOKE" = 0 ]; then
  train_step train_medium_bfloat16 "${MEDIUM[@]}" "${TRAIN_BATCH[1]}" bfloat16
  # full and cross-attention through cuDNN's flash attention (lm.attention_impl=cudnn)
  train_step train_small_bfloat16_cudnn "${SMALL[@]}" "${TRAIN_BATCH[0]}" bfloat16 --attention-impl cudnn
  sampler sampler_medium_bfloat16 "${MEDIUM[@]}" 1 bfloat16
  train_step train_small_float32 "${SMALL[@]}" "${TRAIN_BATCH[0]}" float32
  sampler sampler_small_float32 "${SMALL[@]}" 1 float32
  train_step train_medium_float32 "${MEDIUM[@]}" "${TRAIN_BATCH[1]}" float32
  sampler sampler_medium_float32 "${MEDIUM[@]}" 1 float32
  # ours against audiocraft's, where the reference is installed (it builds these benchmarks' weights)
  if [ -f bench/bench_latency.py ]; then
    run latency_vs_reference 60 "audiocraft,omegaconf" "$PY" bench/bench_latency.py \
      --dim "${SMALL[0]}" --heads "${SMALL[1]}" --layers "${SMALL[2]}" --seconds "$SECONDS_" \
      --batches "$(echo $LAT_BATCHES | tr ' ' ',')" --skip-reference --out "$RAW/latency_vs_reference.json"
  fi
  run pipeline 90 "audiocraft" "$PY" bench/bench_pipeline.py --dim "${SMALL[0]}" --heads "${SMALL[1]}" \
    --layers "${SMALL[2]}" --batches 1,8 --repeats 1 --skip-reference --dtype bfloat16
  [ -f bench/results/pipeline_gpu.json ] && mv bench/results/pipeline_gpu.json "$RAW/pipeline.json"
fi
if [ -n "$plan_pid" ]; then
  wait "$plan_pid"
  rc="$(cat "$RAW/plan_small.rc" 2>/dev/null || echo 1)"
  if [ "$rc" = 0 ]; then printf 'plan_small\tok\t\t\n' >> "$STATUS"
  else printf 'plan_small\tfailed\t\texit %s: %s\n' "$rc" "$(tail -n 1 "$RAW/plan_small.log" | cut -c1-300)" >> "$STATUS"; fi
fi

# ---------------------------------------------------------------- 3. one JSON with every figure
"$PY" - "$RAW" "$OUT/device_suite_$SLUG.json" "$DEVICE" "$SMOKE" "$(( $(date +%s) - START ))" <<'EOF'
"""Collect the raw outputs into one JSON: per benchmark its status and figures."""
import json
import platform
import sys
from pathlib import Path

raw, out, device, smoke, wall = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
status = {}
for line in (raw / "status.tsv").read_text().splitlines():
    name, state, seconds, detail = (line.split("\t") + ["", "", ""])[:4]
    status[name] = {"status": state, "seconds": int(seconds) if seconds else None, "detail": detail or None}


def figures(name: str):
    if name.startswith("train_") and (raw / f"{name}.json").is_file():
        data = json.loads((raw / f"{name}.json").read_text())
        return {"shape": data["shape"], **data["ours"]}
    if (name.startswith("sampler_") or name.startswith("latency_small")) and (raw / name / "sample.json").is_file():
        data = json.loads((raw / name / "sample.json").read_text())
        later = data["later_calls_s"]
        batch = data["shape"][0] // max(1, len(later) + 1)
        best = min(later) if later else None
        lm = data["lm"]
        return {"shape": {"dim": lm["dim"], "heads": lm["num_heads"], "layers": lm["num_layers"],
                          "frames": data["shape"][-1], "batch": batch, "dtype": lm["compute_dtype"],
                          "decoding_steps": data["sampler"]["decoding_steps"]},
                "compile_plus_first_call_s": data["first_call_s (compile + run)"], "call_s": best,
                "samples_per_s": batch / best if best else None}
    if name == "plan_small" and (raw / "plan_small.json").is_file():
        data = json.loads((raw / "plan_small.json").read_text())
        t = data["train"]["time"]
        return {"device_kind": data["device"]["name"], "mesh": data["mesh"],
                "predicted_step_s": [t["step_low_s"], t["step_high_s"]],
                "predicted_mfu": [t["mfu_low"], t["mfu_high"]],
                "peak_memory_bytes": data["train"]["memory"]["peak"], "flops": data["train"]["flops"]}
    for path in (raw / f"{name}.json", raw / name / "result.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


results = {name: {**row, "figures": figures(name)} for name, row in status.items()}
train, plan = results.get("train_small_bfloat16", {}).get("figures"), results.get("plan_small", {}).get("figures")
comparison = None
if train and plan:       # the plan is for configs/magnet_small.py at the bench's batch, T and text length
    comparison = {"measured_step_s": train["step_s"], "predicted_step_s": plan["predicted_step_s"],
                  "measured_mfu": train["mfu"], "predicted_mfu": plan["predicted_mfu"],
                  "note": "plan: configs/magnet_small.py (T5 width 768) at the bench batch; bench: width-24 text "
                          "projection. Compare MFU, which divides out the FLOP difference."}
summary = {"device": device, "smoke": smoke, "python": platform.python_version(),
           "versions": {m: __import__(m).__version__ for m in ("jax", "flax", "optax", "numpy")},
           "wall_s": wall, "results": results, "measured_vs_predicted_train_step": comparison}
out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
print(json.dumps({k: v["status"] for k, v in results.items()}))
print(f"wrote {out}")
EOF

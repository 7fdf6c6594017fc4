#!/usr/bin/env bash
# A tiny MeLoDy (configs/melody_tiny.py) from nothing, on the same synthetic corpus as the shipped
# MAGNeT (scripts/train_default_model.sh's LM corpus: 1500 clips x 10 s at 16 kHz, the held-out
# attribute combinations removed), then compared with the shipped MAGNeT on the held-out prompts.
# Only the project's own commands. On 2 CPU cores the VAE-GAN takes hours; every step resumes
# where it stopped when the script is run again.
#
#   bash scripts/train_melody_tiny.sh                  # everything under runs/melody
#   RUNS=/tmp/runs CORPUS=/data/lm_corpus bash scripts/train_melody_tiny.sh
#   VAE=codec DPD=dpd bash scripts/train_melody_tiny.sh    # the SEANet VAE instead (loses the timbre)
#
# The VAE is the phase-blind one (configs/melody_tiny.py:codec_osc, the shipped MAGNeT's codec under
# a Gaussian bottleneck), as in the shipped MeLoDy: the SEANet VAE loses the instrument (docs/melody.md).
#
# 1. the corpus (reused when CORPUS holds one), 2. the VAE-GAN (train-codec, bottleneck=vae) and its
# reconstruction report (chroma cosine), 3. the semantic tokenizer (k-means over log-mel + chroma)
# and the semantic tokens with MiniLM text states, 4. the semantic LM, 5. the std of the VAE's
# latents (the DPD diffuses latents / std), 6. the DPD, 7. the model folder, 8. the comparison
# with the shipped MAGNeT (seeds 0-2: comparison.md / .json / .png), 9. the model card.
set -euo pipefail
RUNS=${RUNS:-runs/melody}
CORPUS=${CORPUS:-runs/lm_corpus}
VAE=${VAE:-codec_osc}
DPD=${DPD:-dpd_osc}
TOKENS=$RUNS/semantic_tokens/magnet_tokens/1.0.0

if [ ! -f "$CORPUS/musiccaps.csv" ]; then
    magnet-jax synth-corpus --out "$CORPUS" --clips 1500 --sample-rate 16000 --seed 1 --exclude-heldout --workers 2 --no-progress
fi
magnet-jax train-codec --config configs/melody_tiny.py:$VAE --workdir "$RUNS/vae" data.dir="$CORPUS"
magnet-jax eval-codec --workdir "$RUNS/vae" --out "$RUNS/vae/eval" --clips 30

[ -f "$RUNS/semantic.npz" ] || magnet-jax fit-semantic "$CORPUS" --out "$RUNS/semantic.npz" --num-tokens 32
magnet-jax tokenize "$CORPUS/musiccaps.csv" --out "$TOKENS" --semantic-tokenizer "$RUNS/semantic.npz" \
    --text-encoder minilm --segment-duration 10 --batch-size 16 --no-progress
magnet-jax train --config configs/melody_tiny.py:semantic_lm --workdir "$RUNS/semantic_lm" data.dir="$TOKENS"

SCALE=$(python - "$RUNS/vae" "$CORPUS" <<'EOF'
import sys, numpy as np, soundfile, jax.numpy as jnp
from pathlib import Path
from magnet_jax.models import load_codec_weights
_, codec = load_codec_weights(sys.argv[1])
clips = sorted(Path(sys.argv[2], "audio").rglob("*.wav"))[:32]
wav = np.stack([soundfile.read(p, dtype="float32", frames=16000 * 4)[0] for p in clips])[:, None]
print(f"{float(np.std(np.asarray(codec.encode_moments(jnp.asarray(wav))[0]))):.4f}")
EOF
)
echo "VAE latent std: $SCALE"
magnet-jax train-dpd --config configs/melody_tiny.py:$DPD --workdir "$RUNS/dpd" \
    melody.vae="$RUNS/vae" melody.semantic_tokenizer="$RUNS/semantic.npz" melody.latent_scale="$SCALE" \
    data.dir="$CORPUS"

magnet-jax export-melody --vae "$RUNS/vae" --semantic-lm-workdir "$RUNS/semantic_lm" --dpd-workdir "$RUNS/dpd" \
    --out "$RUNS/model"
python scripts/compare_melody_magnet.py --melody "$RUNS/model" --out "$RUNS/compare"
python scripts/model_card.py --model "$RUNS/model" --runs "$RUNS"
# shipping it (what melody-tiny is): cp -r "$RUNS/model" magnet_jax/assets/default_melody

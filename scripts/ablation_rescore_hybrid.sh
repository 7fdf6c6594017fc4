#!/usr/bin/env bash
# The rescoring / Hybrid-MAGNeT ablation from nothing (2 CPU cores: about 2 hours in all):
# 1. the shipped default model's LM corpus again (same seeds, held-out combinations left out) and
# its valid split, 2. their tokens from the shipped model's own codec (5-s segments), 3. the
# autoregressive twin of the default LM (configs/ablation_musicgen.py) and its packaged folder,
# 4. magnet-jax eval on the held-out prompts (seeds 0-2) for plain MAGNeT, rescoring with
# w = 0.3 / 0.7, Hybrid with 1- and 2-s prefixes and the MusicGen alone, pooled, with latency:
# RUNS/ablation/ablation.md, .json and .png.
#
#   bash scripts/ablation_rescore_hybrid.sh          # everything under runs/
set -euo pipefail
RUNS=${RUNS:-runs}
MODEL=magnet_jax/assets/default_model
TOKENS=$RUNS/default_tokens/magnet_tokens/1.0.0

[ -f "$RUNS/lm_corpus/musiccaps.csv" ] || magnet-jax synth-corpus --out "$RUNS/lm_corpus" --clips 1500 \
    --sample-rate 16000 --seed 1 --exclude-heldout --workers 2 --no-progress
[ -f "$RUNS/lm_corpus_valid/musiccaps.csv" ] || magnet-jax synth-corpus --out "$RUNS/lm_corpus_valid" --clips 64 \
    --sample-rate 16000 --seed 2 --exclude-heldout --workers 2 --no-progress
if [ ! -d "$TOKENS" ]; then
    magnet-jax tokenize "$RUNS/lm_corpus/musiccaps.csv" --out "$TOKENS" --codec-weights "$MODEL" \
        --segment-duration 5 --batch-size 16 --no-progress
    magnet-jax tokenize "$RUNS/lm_corpus_valid/musiccaps.csv" --out "$TOKENS" --codec-weights "$MODEL" \
        --segment-duration 5 --batch-size 16 --split valid --no-progress
fi
magnet-jax train --config configs/ablation_musicgen.py --workdir "$RUNS/ablation_musicgen" data.dir="$TOKENS"
magnet-jax export --lm-workdir "$RUNS/ablation_musicgen" --codec-workdir "$MODEL" --out "$RUNS/ablation_musicgen_model"
python scripts/ablation_rescore_hybrid.py --musicgen "$RUNS/ablation_musicgen_model" --out "$RUNS/ablation"

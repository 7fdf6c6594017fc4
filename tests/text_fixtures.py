"""Local stand-ins for Hugging Face text encoders (no network here): a sentencepiece unigram
model trained in a fraction of a second, and small random-weight T5 folders written by
transformers' save_pretrained, so our loader and transformers read the very same files."""
from __future__ import annotations

import functools
import io
import shutil
from pathlib import Path

# Strings chosen to break tokenizers: unicode, accents, digits, special-token text, whitespace
# runs, characters outside the vocabulary, very long input, and empty input.
HARD_STRINGS = [
    "",
    " ",
    "A cheerful pop song with acoustic guitar and upbeat drums.",
    "naïve café résumé — Ångström Über straße",
    "Épique orchestral, 120 BPM, 4/4 time, recorded 1999 ✓",
    "日本語のテキスト and 中文 mixed in",
    "emoji 🎸🥁🎹 and symbols ♯♭ §±",
    "tabs\tand\nnewlines\r\nhere",
    "   leading and trailing   ",
    "multiple     spaces    between",
    "numbers 3.14159 1,000,000 -42 1e-5 007",
    "special </s> <pad> <unk> <extra_id_0> <extra_id_99> tokens in text",
    "ALL CAPS and MiXeD cAsE",
    "ﬁ ligature ＦＵＬＬ width ① circled",
    "very long: " + " ".join(f"section{i} with strings, brass and {i * 7} bars" for i in range(60)),
]

_WORDS = ("a cheerful pop song with acoustic guitar and upbeat drums ambient electronic music "
          "soft pads slow tempo bpm epic orchestral soundtrack choir lo-fi hip hop beat vinyl "
          "crackle jazzy piano chords minor major heavy metal riff distorted guitars double bass "
          "drum traditional irish folk tune played on fiddle tin whistle smooth jazz saxophone solo "
          "over walking line style techno track kick hi-hats rolling bassline calm relaxing "
          "energetic dark bright female vocals male choir strings brass synth 80s retro wave "
          "naïve café résumé épique über straße 0 1 2 3 4 5 6 7 8 9 section bars time recorded "
          "numbers symbols tokens text caps mixed case leading trailing spaces between").split()


def _corpus(n: int = 600) -> list[str]:
    """Deterministic pseudo-sentences over a music vocabulary (no RNG state shared with tests)."""
    out = []
    for i in range(n):
        k = 5 + (i * 7) % 11
        words = [_WORDS[(i * 31 + j * 17 + (i * j) % 13) % len(_WORDS)] for j in range(k)]
        out.append(" ".join(words).capitalize() + (", " if i % 3 else ". ") + str(i % 200))
    return out


def train_spiece(path: Path, vocab_size: int = 400) -> Path:
    """Train a small T5-style unigram sentencepiece model (<pad>=0, </s>=1, <unk>=2)."""
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    path.write_bytes(model.getvalue())
    return path


T5_SMALL = dict(d_model=64, d_kv=16, d_ff=96, num_layers=3, num_heads=4,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="relu")
FLAN_SMALL = dict(d_model=48, d_kv=8, d_ff=80, num_layers=2, num_heads=6,
                  relative_attention_num_buckets=16, relative_attention_max_distance=40,
                  feed_forward_proj="gated-gelu")


def make_t5_folder(folder: Path, spiece: Path, arch: dict, seed: int = 0,
                   weights: str = "safetensors", tokenizer: str = "spiece") -> Path:
    """A Hugging Face T5 folder: config.json, random weights, spiece.model or tokenizer.json."""
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(spiece, folder / "spiece.model")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=512, dropout_rate=0.0, **arch)
    model = T5EncoderModel(config).eval()
    with torch.no_grad():  # HF's init leaves the relative bias small; make it matter.
        for block in model.encoder.block:
            attn = block.layer[0].SelfAttention
            if attn.has_relative_attention_bias:
                attn.relative_attention_bias.weight.normal_(0.0, 1.0)
    if weights == "safetensors":
        model.save_pretrained(folder)
    else:  # transformers 5 writes only safetensors; an older-style torch pickle by hand
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    if tokenizer == "json":
        T5Tokenizer.from_pretrained(folder).save_pretrained(folder)
        (folder / "spiece.model").unlink()
    return folder


_ROOT: Path | None = None


def _root() -> Path:
    """One temporary folder per test session for the built fixtures (removed at exit)."""
    global _ROOT
    if _ROOT is None:
        import atexit
        import tempfile
        _ROOT = Path(tempfile.mkdtemp(prefix="magnet_jax_text_"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return _ROOT


@functools.lru_cache(maxsize=None)
def spiece_model() -> Path:
    return train_spiece(_root() / "spiece.model")


# Stand-ins for the released models' encoders: the real width (what xp.cfg's name means to the
# LM's output_proj), one layer.
T5_BASE_WIDTH = dict(T5_SMALL, d_model=768, num_layers=1)
T5_LARGE_WIDTH = dict(T5_SMALL, d_model=1024, num_layers=1)

# name -> (architecture, weights file, tokenizer file): original T5 from safetensors +
# spiece.model; flan-style gated GELU from a torch pickle + tokenizer.json.
T5_VARIANTS = {"t5": (T5_SMALL, "safetensors", "spiece"), "flan": (FLAN_SMALL, "bin", "json"),
               "t5-base": (T5_BASE_WIDTH, "safetensors", "spiece"),
               "t5-large": (T5_LARGE_WIDTH, "safetensors", "spiece")}


@functools.lru_cache(maxsize=None)
def t5_folder(variant: str) -> Path:
    """A random T5 folder of one of T5_VARIANTS, built once per test session."""
    arch, weights, tokenizer = T5_VARIANTS[variant]
    return make_t5_folder(_root() / variant, spiece_model(), arch, 0, weights, tokenizer)

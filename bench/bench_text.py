"""Benchmark: encoding 64 prompts with t5-base shapes (random weights) and with MiniLM,
magnet-jax against transformers on the same weights and the same tokenizer files.

    python bench/bench_text.py                      # 64 prompts, t5-base shapes + MiniLM
    python bench/bench_text.py --prompts 16 --repeats 3 --encoders minilm

Each side does the whole job: tokenize a batch (padded to its longest) and run the encoder.
transformers: its tokenizer + T5EncoderModel / BertModel under torch.inference_mode.
ours: TextEncoder.hidden_states (host tokenization, jitted forward on bucketed shapes, states
back to the host, per-prompt rows; prompts sorted by length and encoded 16 at a time), with
the prompt cache off so every call encodes.
The forward pass alone is timed too, on the very [B, S] batch transformers runs. Ours is
timed after compilation; the compile time (first call minus a steady call) is reported
separately. Timings keep the best of --repeats after one warm-up. Prints one JSON object and writes
bench/results/text_<backend>.json. t5-base's tokenizer cannot be downloaded here, so both sides
read a small sentencepiece model trained on the fly (saved as tokenizer.json by transformers);
token counts, not the vocabulary, drive the cost.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               relative_attention_num_buckets=32, relative_attention_max_distance=128,
               feed_forward_proj="relu", dropout_rate=0.0)

_STYLES = ["upbeat pop", "ambient electronic", "epic orchestral", "lo-fi hip hop", "heavy metal",
           "irish folk", "smooth jazz", "minimal techno", "bossa nova", "cinematic trailer"]
_DETAILS = ["with acoustic guitar and warm bass", "featuring soft pads and a slow tempo",
            "with a driving kick drum at 128 bpm", "played by a string quartet",
            "with female vocals and a catchy chorus", "recorded live with crowd noise",
            "in a minor key with a melancholic mood", "with vinyl crackle and jazzy piano chords"]


def prompts(n: int) -> list[str]:
    """MusicCaps-like descriptions of varied length (about 8 to 60 words)."""
    out = []
    for i in range(n):
        parts = [f"A {_STYLES[i % len(_STYLES)]} track"]
        parts += [_DETAILS[(i * 3 + j) % len(_DETAILS)] for j in range(1 + i % 7)]
        out.append(", ".join(parts) + ".")
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(name: str, encoder, hf_model, hf_tokenizer, texts: list[str], repeats: int,
            hf_kwargs: dict) -> dict:
    import jax
    import numpy as np
    import torch

    def theirs_all():
        inputs = hf_tokenizer(texts, padding=True, return_tensors="pt", **hf_kwargs)
        return hf_model(**inputs).last_hidden_state

    inputs = hf_tokenizer(texts, padding=True, return_tensors="pt", **hf_kwargs)
    with torch.inference_mode():
        theirs_all()  # warm-up: allocator, oneDNN primitives
        ref_s, ref = timed(theirs_all, repeats)
        ref_fwd_s, _ = timed(lambda: hf_model(**inputs).last_hidden_state, repeats)
    first_s, _ = timed(lambda: encoder.hidden_states(texts), 1)
    ours_s, rows = timed(lambda: encoder.hidden_states(texts), repeats)
    tokens = encoder.tokenize(texts)
    encoder.forward(tokens, exact=True)  # compile the exact [B, S] shape transformers runs
    ours_fwd_s, _ = timed(lambda: encoder.forward(tokens, exact=True), repeats)
    ref = ref.numpy()
    err = max(float(np.abs(row - ref[i, :row.shape[0]]).max()) for i, row in enumerate(rows))
    return {
        "encoder": name, "prompts": len(texts), "tokens_padded": list(tokens.ids.shape),
        "tokens_real": int(tokens.mask.sum()),
        "transformers_s": round(ref_s, 4), "ours_s": round(ours_s, 4),
        "ratio": round(ours_s / ref_s, 3),
        "transformers_forward_s": round(ref_fwd_s, 4), "ours_forward_s": round(ours_fwd_s, 4),
        "forward_ratio": round(ours_fwd_s / ref_fwd_s, 3),
        "ours_compile_s": round(max(first_s - ours_s, 0.0), 3),
        "max_abs_diff": err, "jax_devices": len(jax.devices()),
    }


def bench_t5(texts: list[str], repeats: int) -> dict:
    import numpy as np
    import torch
    from transformers import T5Config as HFT5Config
    from transformers import T5EncoderModel, T5Tokenizer

    from magnet_jax.text import TextEncoder, load_tokenizer
    from magnet_jax.text.t5 import T5Config, t5_from_state_dict
    from text_fixtures import train_spiece

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_spiece(folder / "spiece.model", vocab_size=2000)
        hf_tokenizer = T5Tokenizer.from_pretrained(folder)
        hf_tokenizer.save_pretrained(folder)  # tokenizer.json, what t5-base ships
        (folder / "spiece.model").unlink()
        hf_tokenizer = T5Tokenizer.from_pretrained(folder)
        ours_tokenizer = load_tokenizer(folder, "<pad>")
    torch.manual_seed(0)
    hf_model = T5EncoderModel(HFT5Config(**T5_BASE)).eval()
    sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    model = t5_from_state_dict(T5Config.from_json(T5_BASE), sd)
    del sd
    encoder = TextEncoder(model, ours_tokenizer, cache_size=0)
    return compare("t5-base shapes (random weights)", encoder, hf_model, hf_tokenizer, texts,
                   repeats, {})


def bench_minilm(texts: list[str], repeats: int) -> dict:
    from transformers import AutoTokenizer, BertModel

    from magnet_jax.text import TextEncoder, minilm_folder
    from magnet_jax.text.minilm import MINILM_MAX_LENGTH

    folder = minilm_folder()
    encoder = TextEncoder.minilm(cache_size=0)
    hf_model = BertModel.from_pretrained(folder).eval()
    return compare("all-MiniLM-L6-v2 (packaged weights)", encoder, hf_model,
                   AutoTokenizer.from_pretrained(folder), texts, repeats,
                   {"truncation": True, "max_length": MINILM_MAX_LENGTH})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--encoders", nargs="+", default=["t5", "minilm"], choices=["t5", "minilm"])
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/text_<backend>.json)")
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import jax
    import torch
    import transformers

    texts = prompts(args.prompts)
    runs = {"t5": bench_t5, "minilm": bench_minilm}
    results = [runs[name](texts, args.repeats) for name in args.encoders]
    backend = jax.default_backend()
    report = {
        "benchmark": "text", "backend": backend, "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "jax": jax.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "repeats": args.repeats, "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"text_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Text conditioning: T5 and MiniLM encoders in Flax NNX, and MAGNeT's text conditioner.

    from magnet_jax.text import Conditioner
    conditioner = Conditioner.t5("/path/to/t5-base", dim=1024)     # or Conditioner.minilm(dim=...)
    cond, null = conditioner.encode_with_null(["80s synth pop", "calm piano"])   # [B, S, D] each
"""
from magnet_jax.text.conditioner import (OUTPUT_PROJ_PREFIX, Condition, Conditioner,
                                         OutputProjection, TextConditioner, TextSettings,
                                         load_output_proj, output_proj_from_torch,
                                         text_settings_from_xp)
from magnet_jax.text.dropout import cfg_dropout, word_dropout
from magnet_jax.text.encoder import TextEncoder, bucket, collate_hidden
from magnet_jax.text.files import ModelFilesError, resolve_model_folder
from magnet_jax.text.minilm import BertConfig, BertEncoder, load_bert, minilm_folder
from magnet_jax.text.t5 import T5Config, T5Encoder, load_t5
from magnet_jax.text.tokenizer import TextTokenizer, TokenBatch, load_tokenizer

__all__ = [
    "OUTPUT_PROJ_PREFIX", "Condition", "Conditioner", "OutputProjection", "TextConditioner",
    "TextSettings", "text_settings_from_xp", "load_output_proj", "output_proj_from_torch", "cfg_dropout", "word_dropout", "TextEncoder",
    "bucket", "collate_hidden", "ModelFilesError", "resolve_model_folder", "BertConfig",
    "BertEncoder", "load_bert", "minilm_folder", "T5Config", "T5Encoder", "load_t5",
    "TextTokenizer", "TokenBatch", "load_tokenizer",
]

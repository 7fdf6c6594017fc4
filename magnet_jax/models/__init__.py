"""The models a user loads and generates with, one file per family, sharing where checkpoints come
from (``sources``), how audiocraft exports are converted (``conversion``), how converted folders
load (``loading``) and audio handling (``audio``).

    from magnet_jax.models import MAGNeT
    model = MAGNeT.from_pretrained("facebook/magnet-small-10secs")
    out = model.generate(["80s synth pop"], seed=0)

Lower layers (codec, lm, text) never import from here.
"""
from magnet_jax.models.audio import convert_audio
from magnet_jax.models.conversion import convert
from magnet_jax.models.errors import ModelNotFoundError, PipelineError
from magnet_jax.models.loading import auto_mesh, load_codec_weights, load_converted_codec, verify_model_folder
from magnet_jax.models.magnet import MAGNeT, Generation
from magnet_jax.models.sources import (CODEC_FILE, KNOWN_MODELS, LM_FILE, META_FILE, CheckpointFiles, cache_folder,
                                       cache_root, locate, no_model_message)

__all__ = ["MAGNeT", "Generation", "PipelineError", "ModelNotFoundError", "convert", "convert_audio",
           "load_converted_codec", "load_codec_weights", "verify_model_folder", "auto_mesh", "locate", "cache_folder", "cache_root",
           "no_model_message", "CheckpointFiles", "KNOWN_MODELS", "LM_FILE", "CODEC_FILE", "META_FILE"]

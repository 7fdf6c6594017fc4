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
from magnet_jax.models.musicgen import MusicGen
from magnet_jax.models.hybrid import HybridMAGNeT
from magnet_jax.models.sources import (CODEC_FILE, KNOWN_MODELS, LM_FILE, META_FILE, CheckpointFiles, cache_folder,
                                       cache_root, locate, no_model_message)

__all__ = ["MAGNeT", "MusicGen", "HybridMAGNeT", "load_model", "Generation", "PipelineError", "ModelNotFoundError", "convert", "convert_audio",
           "load_converted_codec", "load_codec_weights", "verify_model_folder", "auto_mesh", "locate", "cache_folder", "cache_root",
           "no_model_message", "CheckpointFiles", "KNOWN_MODELS", "LM_FILE", "CODEC_FILE", "META_FILE"]


def load_model(name_or_path=None, **kwargs) -> "MAGNeT | MusicGen | MeLoDy":
    """MAGNeT, MusicGen or MeLoDy, whichever the folder holds (magnet.json's ``kind``, read from
    xp.cfg's lm_model at conversion, or written by ``export`` / ``MeLoDy.save``); no name: the
    shipped default MAGNeT. ``kwargs``: ``MAGNeT.from_pretrained``'s options."""
    import json
    from magnet_jax.models import sources
    from magnet_jax.models.conversion import converted_folder
    if name_or_path is None:
        return MAGNeT.from_pretrained(None, **kwargs)
    convert_kw = {k: kwargs[k] for k in ("text_encoder", "codec", "cache_dir") if k in kwargs}
    folder = converted_folder(name_or_path, **convert_kw)
    kind = json.loads((folder / sources.META_FILE).read_text()).get("kind", "magnet")
    if kind == "melody":
        from magnet_jax.models.melody import MeLoDy
        cls = MeLoDy
    else:
        cls = MusicGen if kind == "musicgen" else MAGNeT
    model = cls.load_converted(folder, **{k: v for k, v in kwargs.items() if k not in ("codec", "cache_dir")})
    model.name = str(name_or_path)
    return model

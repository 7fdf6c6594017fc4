"""VGGish (Hershey et al., 2017) as a Fréchet-audio-distance embedder, from torchvggish weights.

A port of the PyPI package ``torchvggish==0.2`` (harritaylor/torchvggish, itself a port of
TensorFlow's ``research/audioset/vggish``): the numpy log-mel front end of ``mel_features`` /
``vggish_input`` and the VGG network in JAX. It reads the released torch state dict
``vggish-10086976.pth`` (keys ``features.0.weight`` ... ``embeddings.4.bias``); no weights ship
with this package, since no PyPI package carries them.

    embedder = load("~/weights/vggish-10086976.pth")
    rows = embedder(audio_16k)          # [N, samples] float32 mono -> [M, 128], one row per 0.96 s

Two choices matter for comparing numbers with other tools:

- **The final ReLU.** torchvggish ends its ``embeddings`` stack with a ReLU after the 128-d layer;
  TensorFlow's VGGish (``vggish_slim.py``: ``fc2`` with ``activation_fn=None``), Google's FAD tool
  and the ``frechet_audio_distance`` package (``use_activation=False``, its default, which drops
  that ReLU) do not. FAD is reported on the pre-activation embedding, so ``final_relu=False`` is
  the default here; ``final_relu=True`` reproduces torchvggish's ``forward`` exactly.
- **PCA post-processing.** The AudioSet release applied a PCA (with whitening), clipping to
  [-2, 2] and 8-bit quantization (torchvggish's ``Postprocessor``). FAD tools use the raw 128-d
  embedding without it (``frechet_audio_distance``: ``use_pca=False``), so it is off by default;
  ``postprocess=True`` applies it with ``pproc.pca_eigen_vectors`` / ``pproc.pca_means`` from the
  state dict or from ``pca_path`` (torchvggish's ``vggish_pca_params-970ea276.pth``).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# ----------------------------------------------------------------------------------------------
# vggish_params
# ----------------------------------------------------------------------------------------------
SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_FRAMES = 96                 # frames per example: 0.96 s
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EMBEDDING_SIZE = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

WINDOW = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))           # 400 samples
HOP = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))                 # 160 samples
FFT_LENGTH = 2 ** int(np.ceil(np.log2(WINDOW)))                  # 512
MIN_SAMPLES = WINDOW + (NUM_FRAMES - 1) * HOP                    # 15600: one whole example

# The VGG stack as torchvggish's make_layers builds it: channels for a 3x3 conv + ReLU, "M" for
# a 2x2 max-pool. Its nn.Sequential indices are the state-dict keys (features.0, features.3, ...).
LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
FC_SIZES = (512 * 6 * 4, 4096, 4096, EMBEDDING_SIZE)
PCA_KEYS = ("pproc.pca_eigen_vectors", "pproc.pca_means")


# ----------------------------------------------------------------------------------------------
# front end: mel_features + vggish_input.waveform_to_examples, float64 like the reference
# ----------------------------------------------------------------------------------------------
def _frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Whole frames of ``window`` rows every ``hop`` rows along axis 0 (a strided view, no padding)."""
    count = 1 + (data.shape[0] - window) // hop
    shape = (count, window) + data.shape[1:]
    strides = (data.strides[0] * hop,) + data.strides
    return np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides, writeable=False)


def _hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


@functools.lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """``[FFT_LENGTH // 2 + 1, NUM_BANDS]`` triangular HTK filters, linear in mel, DC bin zeroed
    (``mel_features.spectrogram_to_mel_matrix``)."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT_LENGTH // 2 + 1))
    edges = np.linspace(_hertz_to_mel(MEL_MIN_HZ), _hertz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def log_mel(clip: np.ndarray) -> np.ndarray:
    """``[frames, 64]`` log(mel + 0.01) of 25 ms periodic-Hann windows every 10 ms."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW))
    spectrum = np.abs(np.fft.rfft(_frame(clip, WINDOW, HOP) * window, FFT_LENGTH))
    return np.log(spectrum @ mel_matrix() + LOG_OFFSET)


def waveform_to_examples(clip: np.ndarray) -> np.ndarray:
    """``[examples, 96, 64]`` float32 non-overlapping 0.96 s log-mel patches of a 16 kHz mono clip
    (``vggish_input.waveform_to_examples`` without its resampling; the tail is dropped)."""
    clip = np.asarray(clip)
    if clip.ndim != 1 or clip.shape[0] < MIN_SAMPLES:
        raise ValueError(f"VGGish needs a mono clip of at least {MIN_SAMPLES} samples "
                         f"({MIN_SAMPLES / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz) for one 0.96 s example; "
                         f"got shape {clip.shape}")
    return _frame(log_mel(clip), NUM_FRAMES, NUM_FRAMES).astype(np.float32)


def clips_to_examples(audio: np.ndarray) -> np.ndarray:
    """``[N, samples]`` 16 kHz clips -> ``[M, 96, 64]`` log-mel examples of all clips, concatenated."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be mono clips [N, samples], got shape {audio.shape}")
    if audio.shape[1] < MIN_SAMPLES:
        raise ValueError(f"clips of {audio.shape[1]} samples ({audio.shape[1] / SAMPLE_RATE:.3f} s) are too "
                         f"short for VGGish: one 0.96 s example needs {MIN_SAMPLES} samples "
                         f"({MIN_SAMPLES / SAMPLE_RATE:.3f} s) at {SAMPLE_RATE} Hz")
    if not len(audio):
        return np.zeros((0, NUM_FRAMES, NUM_BANDS), np.float32)
    return np.concatenate([waveform_to_examples(clip) for clip in audio])


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The torchvggish state-dict keys of the network and their torch shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, 1
    for layer in LAYERS:
        if layer == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (layer, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (layer,)
        index, channels = index + 2, layer                        # conv, ReLU
    for i, (fan_in, fan_out) in enumerate(zip(FC_SIZES[:-1], FC_SIZES[1:])):
        shapes[f"embeddings.{2 * i}.weight"] = (fan_out, fan_in)  # Linear, ReLU
        shapes[f"embeddings.{2 * i}.bias"] = (fan_out,)
    return shapes


def _conv_relu(x, w, b):
    import jax
    y = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(y + b)


def _max_pool(x):
    import jax
    return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def forward(params: Mapping[str, Any], examples, final_relu: bool = False):
    """``[B, 96, 64]`` log-mel examples -> ``[B, 128]`` embeddings.

    Channels-last throughout: flattening the ``[B, 6, 4, 512]`` output of the VGG stack in NHWC
    order is exactly what torchvggish's two transposes before ``view`` produce from NCHW (and
    what TensorFlow's VGGish flattens), so ``embeddings.0`` sees the features in the order its
    weights were trained on."""
    import jax
    import jax.numpy as jnp
    x = examples[..., None]
    convs = iter(params["convs"])
    for layer in LAYERS:
        x = _max_pool(x) if layer == "M" else _conv_relu(x, *next(convs))
    x = x.reshape(x.shape[0], -1)
    last = len(params["fcs"]) - 1
    for i, (w, b) in enumerate(params["fcs"]):
        x = jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST) + b
        if i < last or final_relu:
            x = jax.nn.relu(x)
    return x


def params_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Torch layouts -> ours: conv OIHW -> HWIO, Linear ``[out, in]`` -> ``[in, out]``, float32."""
    layers = dict.fromkeys(k.rsplit(".", 1)[0] for k in expected_shapes())   # in network order
    convs, fcs = [], []
    for layer in layers:
        w, b = (np.asarray(state_dict[f"{layer}.{p}"], np.float32) for p in ("weight", "bias"))
        if layer.startswith("features."):
            convs.append((w.transpose(2, 3, 1, 0), b))
        else:
            fcs.append((w.T, b))
    return {"convs": convs, "fcs": fcs}


# ----------------------------------------------------------------------------------------------
# PCA post-processing (torchvggish's Postprocessor)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PCAQuantizer:
    """The AudioSet release's post-processing: PCA (with whitening), clip to [-2, 2], quantize to
    256 levels. Returns float32 values 0..255 as torchvggish does (not uint8), ``[M, 128]`` (no
    squeeze of a single row)."""
    eigen_vectors: np.ndarray     # [128, 128]
    means: np.ndarray             # [128]

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        pca = (self.eigen_vectors @ (embeddings.T - self.means[:, None])).T
        clipped = np.clip(pca, QUANTIZE_MIN, QUANTIZE_MAX)
        scale = np.float32(255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))
        return np.round((clipped - np.float32(QUANTIZE_MIN)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# the embedder
# ----------------------------------------------------------------------------------------------
class VGGishEmbedder:
    """An ``Embedder`` (``magnet_jax.eval.frechet``): ``[N, samples]`` 16 kHz mono float32 ->
    ``[M, 128]``, one row per whole 0.96 s example of every clip, clips in order.

    The network runs as one jitted program over fixed-size chunks of ``batch_size`` examples (the
    last chunk padded, its extra rows dropped), so any number and length of clips compiles once."""
    name = "vggish"
    sample_rate = SAMPLE_RATE

    def __init__(self, params: Mapping[str, Any], *, final_relu: bool = False,
                 pca: PCAQuantizer | None = None, batch_size: int = 32):
        import jax
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.params = jax.tree.map(jax.numpy.asarray, params)
        self.final_relu = bool(final_relu)
        self.pca = pca
        self.batch_size = int(batch_size)
        self._forward = jax.jit(functools.partial(forward, final_relu=self.final_relu))

    def examples(self, audio: np.ndarray) -> np.ndarray:
        return clips_to_examples(audio)

    def embed_examples(self, examples: np.ndarray) -> np.ndarray:
        """``[M, 96, 64]`` -> ``[M, 128]`` through the jitted network, ``batch_size`` at a time."""
        rows = []
        for start in range(0, len(examples), self.batch_size):
            chunk = examples[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0)))
            rows.append(np.asarray(self._forward(self.params, chunk))[:self.batch_size - pad])
        out = np.concatenate(rows) if rows else np.zeros((0, EMBEDDING_SIZE), np.float32)
        return self.pca(out) if self.pca is not None else out

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return self.embed_examples(self.examples(audio))


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _resolve(path: str | Path) -> tuple[Path, Path | None]:
    """A ``.pth`` file, or a folder with exactly one weights ``.pth`` (plus optionally one whose
    name contains ``pca``, torchvggish's PCA parameters) -> (weights, pca or None)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise FileNotFoundError(f"VGGish weights {path} do not exist; pass torchvggish's state dict "
                                f"(vggish-10086976.pth) or a folder holding it")
    files = sorted(path.glob("*.pth"))
    pca = [f for f in files if "pca" in f.name.lower()]
    weights = [f for f in files if f not in pca]
    if len(weights) != 1 or len(pca) > 1:
        raise FileNotFoundError(f"{path} must hold exactly one VGGish weights .pth (and at most one *pca*.pth); "
                                f"found {[f.name for f in files] or 'none'}. Pass the weights file itself")
    return weights[0], (pca[0] if pca else None)


def _torch_load(path: Path) -> dict[str, np.ndarray]:
    """``torch.load`` with ``weights_only=True`` (no code runs from the file) -> numpy arrays.

    numpy arrays are allowed too: torchvggish's PCA file may hold them (its loader converts with
    ``torch.as_tensor``), and rebuilding an array runs no code."""
    from magnet_jax import torch_pickle
    reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
    allowed = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               *{type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8")}]
    try:
        data = torch_pickle.load_mapping(path, "a torch state dict (torchvggish's vggish-10086976.pth)", allowed)
    except torch_pickle.TorchFileError as err:
        raise ValueError(str(err)) from err
    return {k: (v.detach().float().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in data.items()}


def check_state_dict(state_dict: Mapping[str, np.ndarray], source: str) -> None:
    """Raise ValueError naming every unknown key, missing key or wrong shape."""
    expected = expected_shapes()
    unknown = sorted(set(state_dict) - set(expected) - set(PCA_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; expected torchvggish's VGGish state dict "
                         f"(features.N.weight/bias, embeddings.N.weight/bias, optionally pproc.*)")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}; is this a complete torchvggish VGGish state dict?")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"{source}: {key} has shape {tuple(state_dict[key].shape)}, expected {shape}")


def pca_from_state_dict(state_dict: Mapping[str, np.ndarray], source: str, prefix: str = "") -> PCAQuantizer:
    """``{prefix}pca_eigen_vectors [128, 128]`` and ``{prefix}pca_means [128] or [128, 1]``."""
    names = (f"{prefix}pca_eigen_vectors", f"{prefix}pca_means")
    missing = [n for n in names if n not in state_dict]
    if missing:
        raise ValueError(f"{source}: postprocess=True needs the PCA parameters {list(names)}; missing {missing}. "
                         f"Pass pca_path=vggish_pca_params-970ea276.pth, or postprocess=False (as FAD does)")
    vectors, means = (np.asarray(state_dict[n], np.float32) for n in names)
    if vectors.shape != (EMBEDDING_SIZE,) * 2:
        raise ValueError(f"{source}: {names[0]} has shape {vectors.shape}, expected {(EMBEDDING_SIZE,) * 2}")
    if means.size != EMBEDDING_SIZE:
        raise ValueError(f"{source}: {names[1]} has shape {means.shape}, expected ({EMBEDDING_SIZE},) "
                         f"or ({EMBEDDING_SIZE}, 1)")
    return PCAQuantizer(vectors, means.reshape(-1))


def _pca(state_dict: Mapping[str, np.ndarray], source: str, pca_path: str | None,
         folder_pca: Path | None) -> PCAQuantizer:
    """The PCA parameters from ``pca_path`` if given, else ``pproc.*`` in the state dict, else the
    ``*pca*.pth`` found next to the weights."""
    if pca_path is None and all(k in state_dict for k in PCA_KEYS):
        return pca_from_state_dict(state_dict, source, prefix="pproc.")
    pca_file = Path(pca_path).expanduser() if pca_path is not None else folder_pca
    if pca_file is None or not pca_file.is_file():
        why = "no PCA file was given" if pca_file is None else f"{pca_file} does not exist"
        raise FileNotFoundError(f"postprocess=True: {source} has no pproc.* PCA parameters and {why}; "
                                f"pass pca_path=vggish_pca_params-970ea276.pth (or postprocess=False, as FAD does)")
    return pca_from_state_dict(_torch_load(pca_file), str(pca_file))


def load(path: str, *, postprocess: bool = False, final_relu: bool = False, pca_path: str | None = None,
         batch_size: int = 32) -> VGGishEmbedder:
    """A ``VGGishEmbedder`` from torchvggish's state dict (``vggish-10086976.pth``) or a folder with it.

    ``postprocess``: apply the AudioSet PCA + 8-bit quantization (off for FAD); its parameters come
    from ``pca_path``, else ``pproc.*`` in the state dict, else a ``*pca*.pth`` next to the weights
    in ``path``'s folder. ``final_relu``: keep torchvggish's ReLU on the 128-d layer (off: FAD and
    TensorFlow's VGGish use the embedding before it). ``batch_size``: examples per jitted call."""
    weights, folder_pca = _resolve(path)
    state_dict = _torch_load(weights)
    check_state_dict(state_dict, str(weights))
    pca = _pca(state_dict, str(weights), pca_path, folder_pca) if postprocess else None
    return VGGishEmbedder(params_from_state_dict(state_dict), final_relu=final_relu, pca=pca,
                          batch_size=batch_size)

"""magnet-jax: MAGNeT (masked non-autoregressive text-to-music) in JAX / Flax NNX."""
__version__ = "0.1.0"

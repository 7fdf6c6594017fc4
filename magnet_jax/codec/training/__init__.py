"""Training EnCodec in JAX: losses, the MS-STFT discriminator, RVQ learning, the jitted step, the
loop (``magnet-jax train-codec``) and held-out evaluation (``magnet-jax eval-codec``)."""

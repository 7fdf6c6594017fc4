"""MeLoDy (arXiv 2305.15719): LM-guided dual-path diffusion over audio VAE latents.

diffusion: angle parameterisation, step angles, multi-chunk noising (closed form).
dpd: the dual-path diffusion network.  objective: its training loss.  sampler: the compiled sampler.
kmeans / semantic: semantic tokens (k-means over feature frames; built-in log-mel + chroma
extractor, or a user's).  semantic_lm: MusicGen's LM with one codebook over those tokens.
The VAE-GAN is the codec with ``bottleneck='vae'`` (magnet_jax.codec.vae); the pipeline is
magnet_jax.models.melody.MeLoDy.
"""

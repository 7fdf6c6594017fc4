"""MeLoDy (arXiv 2305.15719): LM-guided dual-path diffusion over audio VAE latents.

diffusion: angle parameterisation, step angles, multi-chunk noising (closed form).
dpd: the dual-path diffusion network.  objective: its training loss.  sampler: the compiled sampler.
"""

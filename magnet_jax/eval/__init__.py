"""Prompt-adherence evaluation on the synthetic corpus's attributes (``magnet-jax eval``).

- ``analysers``: recover instrument, key and mode, tempo, pattern and drums from audio;
- ``frechet``: Fréchet distance between embedding sets, with pluggable embedders;
- ``prompts``: the prompt file format and the held-out prompt set;
- ``report`` / ``runner``: generate, score against the prompts (and chance, and the ceiling of
  real clips), and write report.json, report.md and plots.
"""

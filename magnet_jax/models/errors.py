"""The errors a user of ``magnet_jax.models`` can fix: each is one line saying what and how."""
from __future__ import annotations

class PipelineError(ValueError):
    """Input the user can fix (model name, files, durations, prompts): a one-line message."""


class ModelNotFoundError(PipelineError, FileNotFoundError):
    """The model name is unknown, or its files are missing (which ones, and where)."""

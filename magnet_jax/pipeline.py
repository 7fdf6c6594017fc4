"""The import path of the first releases (``from magnet_jax.pipeline import MAGNeT``), kept so that
code written against it keeps working: everything here is ``magnet_jax.models``'s."""
from magnet_jax.models import *  # noqa: F401,F403
from magnet_jax.models import __all__  # noqa: F401

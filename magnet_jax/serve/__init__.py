"""Serving a MAGNeT model to many clients: the dynamic batcher (``engine``, no web dependency), the
model side of it (``backend``), the request format (``requests``), and the HTTP app with its web
page (``app``, ``static/index.html``) behind ``magnet-jax serve`` (``cli``)."""

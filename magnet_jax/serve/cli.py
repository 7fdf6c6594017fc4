"""``magnet-jax serve``: the batching inference server (HTTP API + web page) for a MAGNeT model.

    magnet-jax serve                                              # shipped model, 127.0.0.1:8000
    magnet-jax serve --model DIR --host 0.0.0.0 --port 8080 --batch-sizes 1,2,4,8 --max-wait-ms 50
    magnet-jax serve --port 0 --decoding-steps 2,1,1,1            # any free port; fast defaults

The model is loaded once and every batch size is compiled for the default sampler settings before
the server listens (one progress line each). ``--port 0`` picks a free port; the line
``magnet-jax serve: listening on http://HOST:PORT`` on stderr says which.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time

from magnet_jax.cli import finite_float

LISTENING = "magnet-jax serve: listening on"


def register(subparsers: argparse._SubParsersAction) -> None:
    from magnet_jax.pipeline_cli import _int_list, _model_args, sampler_args
    p = subparsers.add_parser(
        "serve", help="HTTP server that batches concurrent requests (API, metrics, web page)",
        description="Serve a MAGNeT model over HTTP: POST /v1/generate (JSON or multipart -> WAV or JSON), "
                    "GET /v1/health, /v1/models, /metrics, and a web page at /. Concurrent requests are "
                    "batched into the compiled batch sizes.")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 2, 4, 8], metavar="N,N,...",
                   help="compiled batch sizes; a batch runs in the smallest that holds it (default 1,2,4,8)")
    p.add_argument("--max-wait-ms", type=finite_float, default=50.0,
                   help="how long the oldest queued prompt waits for others to share its batch (default 50)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="queued prompts beyond which requests get 503 + Retry-After (default 64)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="longest prompt in tokens, also the padded text length (default: the text encoder's "
                        "own limit, or 64)")
    p.add_argument("--max-settings", type=int, default=8,
                   help="distinct sampler settings kept compiled (least recently used dropped; default 8)")
    p.add_argument("--max-body-mb", type=finite_float, default=10.0, help="largest request body (default 10 MiB)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="LM compute dtype")
    sampler_args(p)
    p.set_defaults(func=run_serve)


def _check_flags(args: argparse.Namespace) -> None:
    """Every number checked before the model is loaded (minutes on a big model)."""
    from magnet_jax.cli import UserError
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: use 0 (any free port) to 65535")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        raise UserError(f"--batch-sizes {args.batch_sizes}: give sizes >= 1, e.g. 1,2,4,8")
    if args.max_wait_ms < 0:
        raise UserError(f"--max-wait-ms {args.max_wait_ms:g}: must be >= 0")
    if args.max_queue < max(args.batch_sizes):
        raise UserError(f"--max-queue {args.max_queue} is smaller than the largest batch size "
                        f"{max(args.batch_sizes)}: that batch could never fill; raise --max-queue")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise UserError(f"--max-prompt-tokens {args.max_prompt_tokens}: must be >= 1")
    if args.max_settings < 1:
        raise UserError(f"--max-settings {args.max_settings}: must be >= 1")
    if args.max_body_mb <= 0:
        raise UserError(f"--max-body-mb {args.max_body_mb:g}: must be > 0")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads so that a busy port fails at once."""
    from magnet_jax.cli import UserError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}): pick another --port "
                        f"(0: any free port) or --host") from None
    sock.listen(2048)
    return sock


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from magnet_jax.cli import UserError
    from magnet_jax.models import PipelineError
    from magnet_jax.pipeline_cli import load_model, sampler_params
    from magnet_jax.serve.app import create_app
    from magnet_jax.serve.backend import MagnetBackend
    from magnet_jax.serve.engine import Engine

    _check_flags(args)
    sock = _listen(args.host, args.port)
    t0 = time.perf_counter()
    model = load_model(args, compute_dtype=args.dtype)
    try:
        backend = MagnetBackend(model, args.max_prompt_tokens)        # refuses other families by name
        model.set_generation_params(**sampler_params(args))
    except PipelineError as err:
        raise UserError(str(err)) from err
    _say(f"loaded {model.name} in {time.perf_counter() - t0:.1f} s; compiling batch sizes "
         f"{','.join(map(str, sorted(set(args.batch_sizes))))} for the default settings")
    t0 = time.perf_counter()
    backend.warm_up_text()
    _say(f"compiled the text path for prompts of 1-{backend.text_length} tokens in {time.perf_counter() - t0:.1f} s")
    engine = Engine(backend, batch_sizes=args.batch_sizes, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                    max_settings=args.max_settings)
    engine.start(progress=_say)
    limits = backend.limits(max(args.batch_sizes), max_body_bytes=int(args.max_body_mb * 2**20))
    settings = {"batch_sizes": list(engine.batch_sizes), "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue}
    app = create_app(engine, limits, backend.describe(), settings)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
    _say(f"{LISTENING} http://{host if ':' not in host else f'[{host}]'}:{port}")
    try:
        server.run(sockets=[sock])
    finally:
        engine.stop()
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """This verb on its own (``python -m magnet_jax.serve.cli``), as ``magnet-jax`` runs it."""
    from magnet_jax.cli import run
    return run([register], argv)


if __name__ == "__main__":
    from magnet_jax.serve.cli import main as _main
    sys.exit(_main())

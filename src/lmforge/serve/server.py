"""`lmforge serve`: bind the address first (a port in use is the user's to fix, said before any model loads),
load the models, and run the app on uvicorn until stopped."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.serve.options import DEFAULT_LIMITS, Limits


def serve(
    source: str,
    adapters: dict[str, Path],
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    device: str = "auto",
    dtype: str = "auto",
) -> None:
    for flag, value in (("--max-batch", limits.max_batch), ("--max-queue", limits.max_queue)):
        if value < 1:
            raise LmforgeError(f"{flag} {value}: expected 1 or more")
    if limits.max_new_tokens < 1:
        raise LmforgeError(f"--max-new-tokens-limit {limits.max_new_tokens}: expected 1 or more")
    listening = bind(host, port)
    try:
        import uvicorn

        from lmforge.serve.app import build_app
        from lmforge.serve.models import load_models
    except ImportError as err:
        listening.close()
        raise LmforgeError(
            f"lmforge serve needs the serve extra ({err.name} is missing): pip install 'lmforge[serve]'"
        ) from None
    try:
        models = load_models(source, name, adapters, device, dtype, limits)
    except BaseException:
        listening.close()
        raise
    if any(served.engine.model.device.type == "cpu" for served in models.values()):
        say(f"lmforge serve: {cpu_threads()} torch threads on the CPU")
    shown = f"[{host}]" if ":" in host else host
    say(f"lmforge serve: listening on http://{shown}:{listening.getsockname()[1]}/v1 (models: {', '.join(models)})")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        say("lmforge serve: warning: reachable from other machines and no --api-key set")
    app = build_app(models, api_key, limits.max_new_tokens)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[listening])
    finally:
        for served in models.values():
            served.engine.stop()


def cpu_threads() -> int:
    """Set torch's CPU threads for serving: OMP_NUM_THREADS where the user set it, else one core fewer than the
    machine has (at least one). The HTTP side needs a core of its own: with as many torch threads as cores,
    a decode step's threads wait on the busy event loop, and on 2 cores a tiny model's step took 47 ms at
    batch 1 and 330 ms at batch 32, against 7 and 14 ms with one thread (bench/serve_load.py)."""
    import torch

    given = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(given) if given.isdigit() and int(given) > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return threads


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or an error that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise LmforgeError(
                f"--port {port}: the port is already in use on {host}; stop what listens there or choose another "
                "port with --port"
            ) from None
        raise LmforgeError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None
    return sock

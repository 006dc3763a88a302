"""Live servers for the serve tests: `lmforge serve` run as a user runs it, on a free localhost port, waited for on
/health, stopped at the end of the module."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli_runs import LMFORGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, args: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [*LMFORGE, "serve", *args, "--port", str(self.port), "--device", "cpu", "--dtype", "fp32"],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"lmforge serve exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"lmforge serve did not answer /health in 120 s:\n{log.read_text()}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir) -> Path:
    from tiny_runs import save_lora

    out = tmp_path_factory.mktemp("serve_lora")
    save_lora(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Start `lmforge serve ARGS...` (the caller stops it)."""

    def start(*args: str) -> LiveServer:
        return LiveServer(list(args), tmp_path_factory.mktemp("serve_log") / "server.log")

    return start

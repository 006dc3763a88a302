"""Load test of `lmforge serve`: many concurrent clients against the same tiny model, served batched and one at a time.

    python bench/serve_load.py [--quick] [--model DIR] [--clients 64] [--requests 128] [--max-tokens 32]

Starts the server twice (its own process, a free localhost port): with --max-batch BATCH and with --max-batch 1.
Each run sends the same fixed number of greedy chat requests (distinct prompts, max_tokens each) from CLIENTS
concurrent clients, then stops the server. Prints p50/p99 latency, requests/s and generated tokens/s of each,
and the batched / one-at-a-time ratio. The model is bench/common.py's tiny decoder (built once, seeded) unless
--model names another.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model: Path, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "lmforge.cli", "serve", str(model), "--name", "bench", "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--max-queue", "4096", "--device", "cpu", "--dtype", "fp32"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"lmforge serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"lmforge serve did not start in 180 s; see {log}")


def prompt(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4 + i % 9))


async def load(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = 0
    todo = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for i in todo:
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            begin = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - begin)
            tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        begin = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - begin
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": requests / seconds,
        "tps": tokens / seconds,
        "seconds": seconds,
    }


def measure(model: Path, max_batch: int, args, work: Path) -> dict:
    process, url = start(model, max_batch, work / f"serve-batch{max_batch}.log")
    try:
        asyncio.run(load(url, min(args.clients, 4), min(args.requests, 4), 4))  # warm-up
        result = asyncio.run(load(url, args.clients, args.requests, args.max_tokens))
        result["peak"] = httpx.get(f"{url}/health").json()["models"]["bench"]["peak_batch"]
        return result
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 clients, 16 requests, 8 tokens")
    parser.add_argument("--model", type=Path, help="a model folder (default: the bench's tiny model)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32, help="the batched run's --max-batch")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.max_tokens = 8, 16, 8
    model = args.model or common.model_dir()
    work = common.WORK / "serve_load"
    work.mkdir(parents=True, exist_ok=True)
    common.say(f"serve_load: {args.requests} requests, {args.clients} clients, {args.max_tokens} tokens each")
    batched = measure(model, args.max_batch, args, work)
    single = measure(model, 1, args, work)
    rows = [
        [f"batched (--max-batch {args.max_batch})", batched],
        ["one at a time (--max-batch 1)", single],
    ]
    common.print_table(
        ["serving", "p50 latency", "p99 latency", "requests/s", "tokens/s", "peak batch"],
        [
            [name, f"{r['p50']:.2f} s", f"{r['p99']:.2f} s", f"{r['rps']:.1f}", f"{r['tps']:,.0f}", str(r["peak"])]
            for name, r in rows
        ],
    )
    print(
        f"\nbatched / one at a time: {batched['tps'] / single['tps']:.1f}x tokens/s, "
        f"{batched['rps'] / single['rps']:.1f}x requests/s, p50 latency {single['p50'] / batched['p50']:.1f}x lower"
    )
    print(f"({os.cpu_count()} CPUs, torch threads as the server sets them; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

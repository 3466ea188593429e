"""Throughput and latency of the HTTP service's text endpoint, over loopback.

    python benchmarks/service.py                 # 1, 8, 32 clients + 10,000 requests at 32
    python benchmarks/service.py --quick         # a quicker look (fewer requests)

A fresh ``emofuse serve`` process (its defaults: the bundled model, text micro-batching, one
torch thread per operation) listens on 127.0.0.1; a bounded load script in this process sends
``POST /v1/analyze/text`` with one English sentence each (50 distinct sentences, in turn) from
``N`` concurrent clients, each with its own keep-alive connection (a minimal HTTP/1.1 client,
one write per request), each sending its next request when the last is answered. Per level:
requests, wall seconds, requests/s, latency p50/p95/p99/max and the answers that were not 2xx.
Then the soak: 10,000 requests at 32 clients, counting non-2xx answers and transport errors,
and the files left in the service's temporary folder.

Writes ``benchmarks/results/service.json``: the command, the tree's state, the machine, the load
averages at start and end (other work on the same cores lowers every number), per level the
numbers above, ``text_req_per_s`` (at 32 clients; target ≥ 100 with zero errors) and the soak.
The load script shares the machine's cores with the service, so the numbers are a lower bound
of what the service does for clients elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _env import git_state, load_average, machine, require_clean  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "service.json"
TARGET_REQ_PER_S = 100.0

SENTENCES = [
    "I can't believe you did that, it's wonderful!",
    "This is the worst day of my life.",
    "Could you pass me the salt, please?",
    "We won the championship last night!",
    "I'm so scared of what might happen next.",
    "Honestly, I don't care either way.",
    "Why would you ever say something like that to me?",
    "That movie made me cry for an hour.",
    "Wow, I did not expect to see you here!",
    "The meeting starts at nine tomorrow.",
]
SENTENCES = [f"{s} ({i})" for i in range(5) for s in SENTENCES]  # 50 distinct texts


def start_service(state: Path) -> tuple[subprocess.Popen[str], str, Path]:
    log = state.parent / "service.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "emofuse", "serve", "--port", "0", "--state-dir", str(state)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited:\n{log.read_text()}")
        m = re.search(r"listening on (http://\S+:\d+)", log.read_text())
        if m:
            try:
                if httpx.get(m.group(1) + "/readyz", timeout=5).status_code == 200:
                    return proc, m.group(1), log
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the service was not ready in 300 s:\n{log.read_text()}")


class Connection:
    """A minimal HTTP/1.1 keep-alive client: one write per request, one read per answer.

    (A general client such as httpx writes a request's headers and body separately, which on
    loopback can meet the receiver's delayed ACK and add ~40 ms to every request; it also
    spends more of the CPU the service needs. This one measures the service, not the client.)
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def load(url: str, clients: int, requests: int) -> dict[str, object]:
    """``requests`` requests from ``clients`` concurrent clients; latencies and failures."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    bodies = [json.dumps({"text": s}).encode() for s in SENTENCES]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    counter = iter(range(requests))

    async def client() -> None:
        conn = Connection(host, int(port))
        try:
            for i in counter:
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post("/v1/analyze/text", bodies[i % len(bodies)])
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if i % 97 == 0 and status == 200:  # now and then: a real answer, in the schema
                    answer = json.loads(data)
                    assert answer["predictions"][0]["emotion"], answer
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    non_2xx = sum(n for code, n in statuses.items() if not code.startswith("2"))
    return {
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 3),
        "req_per_s": round(len(latencies) / seconds, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
        },
        "statuses": statuses,
        "non_2xx": non_2xx,
        "transport_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests per level, soak of 2,000"
    )
    parser.add_argument(
        "--soak", type=int, default=10_000, help="requests of the soak at 32 clients"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    state = git_state()
    require_clean(state, args.allow_dirty)
    per_level = {1: 100, 8: 400, 32: 1000} if args.quick else {1: 300, 8: 1200, 32: 3000}
    soak = 2000 if args.quick else args.soak
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="emofuse-bench-service-") as tmp:
        service_state = Path(tmp) / "state"
        proc, url, log = start_service(service_state)
        try:
            asyncio.run(load(url, 8, 200))  # warm-up: first batches, connection set-up
            levels = []
            for clients, n in per_level.items():
                row = asyncio.run(load(url, clients, n))
                levels.append(row)
                print(json.dumps(row), flush=True)
            soak_row = asyncio.run(load(url, 32, soak))
            temp_root = service_state / "tmp"
            left = [p for p in temp_root.rglob("*") if p.is_file()] if temp_root.exists() else []
            soak_row["temp_files_left"] = len(left)
            print(json.dumps(soak_row), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
        server_errors = "Traceback" in log.read_text()
    at32 = next(r for r in levels if r["clients"] == 32)
    result = {
        "benchmark": "service",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git": state,
        "machine": machine(["fastapi", "uvicorn", "starlette", "httpx", "pydantic", "torch"]),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "service": "emofuse serve defaults: bundled model, text_batch 32, text_wait_ms 3, torch_threads 1",
        "endpoint": "POST /v1/analyze/text, one sentence per request",
        "levels": levels,
        "text_req_per_s": at32["req_per_s"],
        "target_req_per_s": TARGET_REQ_PER_S,
        "meets_target": at32["req_per_s"] >= TARGET_REQ_PER_S
        and at32["non_2xx"] == 0
        and not at32["transport_errors"],
        "soak": soak_row,
        "traceback_in_service_log": server_errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"text_req_per_s at 32 clients: {result['text_req_per_s']} → {args.out}")


if __name__ == "__main__":
    main()

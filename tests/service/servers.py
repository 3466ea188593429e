"""Helpers of the service tests: an ``emofuse serve`` process on loopback, job polling.

The service runs as ``python -m emofuse serve --port 0``; its first line says the port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "emofuse" / "datasets" / "sample"
CLIP = SAMPLE / "01-01-01-01-01-01-01.mp4"  # 3.3 s, a face and a sentence
WAV = SAMPLE / "03-01-05-02-01-01-01.wav"  # 4.1 s of speech
KEY = "test-key-1b7f0c"
PG_ENV = "EMOFUSE_TEST_POSTGRES_URL"


def _hash(key: str) -> str:
    from emofuse.service.auth import hash_key

    return hash_key(key)


KEY_HASH = _hash(KEY)


class Server:
    """One ``emofuse serve`` process on 127.0.0.1 (a free port), its state in ``state``."""

    def __init__(self, state: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log = state.parent / f"{state.name}-{uuid.uuid4().hex[:6]}.log"

    def start(self, ready: float = 180.0) -> Server:
        """Start it and wait until ``/readyz`` says ready."""
        self.state.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        cmd = [sys.executable, "-m", "emofuse", "serve", "--port", "0"]
        cmd += ["--state-dir", str(self.state), *self.args]
        fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + ready
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the service exited ({self.proc.returncode}):\n{self.output()}"
                )
            m = re.search(r"listening on (http://\S+:\d+)", self.output())
            if m:
                self.url = m.group(1)
                try:
                    if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"the service was not ready within {ready} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM and wait (a graceful stop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, key: str | None = KEY, timeout: float = 120.0) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def temp_files(self) -> list[Path]:
        """Files left in the service's temporary folders."""
        root = self.state / "tmp"
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def assert_no_temp_files(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while self.temp_files() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.temp_files(), f"temporary files left: {self.temp_files()}"


def wait_job(
    client: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), timeout=180.0
):
    """Poll a job until it reaches one of ``states``; returns its JSON."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job and job['state']} after {timeout} s: {job}")


# -- media made for the tests -----------------------------------------------------------------
def write_audio(path: Path, wave: np.ndarray, sr: int = 16000) -> Path:
    import soundfile as sf

    sf.write(path, wave.astype(np.float32), sr)
    return path

"""Real services on loopback: ``emofuse serve`` processes (uvicorn), media made for the tests.

Every test here talks HTTP to a separate process, as a client would. PostgreSQL tests use
``$EMOFUSE_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway cluster with
``scripts/postgres-test.sh``); without it they skip locally and fail in CI.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")
pytest.importorskip("sqlalchemy", reason="the service extra is not installed")

from .servers import CLIP, KEY_HASH, PG_ENV, WAV, Server, write_audio


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Inputs good and bad, each named as a client might name it."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("media")
    speech, sr = sf.read(WAV, dtype="float32")
    if speech.ndim > 1:
        speech = speech.mean(axis=1)
    gap = np.zeros(sr // 2, np.float32)
    out = {
        "clip": CLIP,
        "wav": WAV,
        "wav_named_txt": d / "speech.txt",
        "script_named_mp4": d / "evil.mp4",
        "empty": d / "empty.wav",
        "oversized": d / "big.wav",
        "truncated_mp4": d / "broken.mp4",
        "long_flac": d / "long.flac",
        "very_long_flac": d / "very-long.flac",
        "silence": d / "silence.wav",
        "speech_40s": d / "speech-40s.wav",
        "pickle_named_wav": d / "model.wav",
    }
    out["wav_named_txt"].write_bytes(WAV.read_bytes())
    out["script_named_mp4"].write_text("#!/bin/sh\nrm -rf /\n")
    out["empty"].write_bytes(b"")
    out["oversized"].write_bytes(b"RIFF" + os.urandom(5 * 1024 * 1024))
    out["truncated_mp4"].write_bytes(CLIP.read_bytes()[:3000])
    write_audio(out["long_flac"], np.zeros(sr * 60), sr)  # 60 s: too long for /v1/analyze
    write_audio(out["very_long_flac"], np.zeros(sr * 600), sr)  # 10 min: too long for a job
    rng = np.random.default_rng(0)
    write_audio(out["silence"], rng.normal(0, 1e-4, sr * 3), sr)
    write_audio(out["speech_40s"], np.concatenate([speech, gap] * 9), sr)
    import pickle

    out["pickle_named_wav"].write_bytes(pickle.dumps({"a": 1}))
    return out


def api_args(*extra: str) -> list[str]:
    """The flags of the shared test service: keys on, small limits, one worker, short queue."""
    return [
        "--api-key-hash",
        KEY_HASH,
        "--max-upload-mb",
        "4",
        "--max-clip-seconds",
        "10",
        "--max-seconds",
        "120",
        "--max-turns",
        "50",
        "--workers",
        "1",
        "--queue",
        "1",
        "--timeout",
        "60",
        *extra,
    ]


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """The shared test service (SQLite jobs), started once for the session."""
    server = Server(tmp_path_factory.mktemp("api") / "state", *api_args()).start()
    yield server
    server.stop()


@pytest.fixture
def client(api):
    with api.client() as c:
        yield c


def postgres_url() -> str:
    """``$EMOFUSE_TEST_POSTGRES_URL``; skips (fails in CI) when it is not set or not reachable."""
    url = os.environ.get(PG_ENV)
    why = None
    if not url:
        why = f"PostgreSQL not available: set {PG_ENV} (bash scripts/postgres-test.sh start)"
    if why is None:
        try:
            import psycopg

            with psycopg.connect(
                url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5
            ):
                pass
        except Exception as e:
            why = f"PostgreSQL at {PG_ENV} not reachable: {e}"
    if why is not None:
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    return url  # type: ignore[return-value]


@pytest.fixture
def pg_db():
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    import psycopg

    base = postgres_url().replace("postgresql+psycopg://", "postgresql://")
    name = f"emofuse_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix, _, _ = base.rpartition("/")
    yield f"{prefix}/{name}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

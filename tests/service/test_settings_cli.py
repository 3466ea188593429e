"""`emofuse serve` on the command line, its settings, API key hashing and container sniffing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emofuse.errors import ConfigError
from emofuse.service.auth import hash_key, key_accepted, presented_key
from emofuse.service.limits import sniff
from emofuse.service.settings import ServiceSettings, parse_models

from .servers import CLIP, WAV


def emofuse(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "emofuse", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_serve_help_is_fast_and_true_to_the_options():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from emofuse.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'fastapi', 'uvicorn', 'sqlalchemy') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - t)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout, proc.stdout
    for flag in (
        "--host",
        "--port",
        "--model",
        "--database",
        "--api-key-hash",
        "--max-upload-mb",
        "--max-seconds",
        "--max-clip-seconds",
        "--workers",
        "--queue",
        "hash-key",
    ):
        assert flag in proc.stdout, flag
    assert "127.0.0.1" in proc.stdout


def test_hash_key_from_stdin_and_new():
    proc = emofuse("serve", "hash-key", stdin="s3cret\n")
    assert proc.returncode == 0 and proc.stdout.strip() == hash_key("s3cret")
    proc = emofuse("serve", "hash-key", "--new")
    key, digest = (line.split(":", 1)[1].strip() for line in proc.stdout.strip().splitlines())
    assert len(key) >= 40 and hash_key(key) == digest
    proc = emofuse("serve", "hash-key", stdin="   ")
    assert proc.returncode == 2 and "empty" in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--api-key-hash", "plain-key"], "64-hex-digit SHA-256"),
        (["--model", "nodir"], "NAME=DIR"),
        (["--model", "x=/definitely/not/here"], "is not a folder"),
        (["--port", "70000"], "port"),
        (["--workers", "0"], "workers"),
        (["--database", "postgresql://u:pw@127.0.0.1:1/x"], "cannot open the job database"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(tmp_path, args, says):
    proc = emofuse("serve", "--state-dir", str(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "pw@" not in proc.stderr  # a password in the URL is never printed


def test_settings_from_the_environment(monkeypatch, tmp_path):
    h1, h2 = hash_key("a"), hash_key("b")
    monkeypatch.setenv("EMOFUSE_SERVICE_API_KEY_HASHES", f"{h1}, {h2.upper()}")
    monkeypatch.setenv("EMOFUSE_SERVICE_MODELS", f"one={tmp_path},two={tmp_path}")
    monkeypatch.setenv("EMOFUSE_SERVICE_PORT", "9001")
    s = ServiceSettings(state_dir=tmp_path)
    assert s.api_key_hashes == [h1, h2] and list(s.models) == ["one", "two"]
    assert s.port == 9001 and s.default_model == "one" and s.host == "127.0.0.1"
    assert s.db_url == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert ServiceSettings(port=1, database_url="postgresql://u@h/db").db_url.startswith(
        "postgresql+psycopg://"
    )
    monkeypatch.delenv("EMOFUSE_SERVICE_MODELS")
    assert list(ServiceSettings().models) == ["default"]  # the bundled model
    with pytest.raises(ConfigError, match="given twice"):
        parse_models(["a=/x", "a=/y"])


def test_api_keys_compare_hashes():
    h = hash_key("k")
    assert key_accepted("k", [hash_key("other"), h]) and not key_accepted("K", [h])
    assert presented_key({"authorization": "Bearer k"}) == "k"
    assert presented_key({"x-api-key": " k "}) == "k"
    assert presented_key({"authorization": "Basic abc"}) is None


def test_sniffing_reads_content_not_names():
    assert sniff(WAV.read_bytes()[:64]).name == "WAV"
    assert sniff(CLIP.read_bytes()[:64]).name == "MP4/QuickTime"
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).suffix == ".png"
    for junk in (
        b"#!/bin/sh\n",
        b"\x80\x04\x95pickle",
        b"#EXTM3U\nfile:///etc/passwd",
        b"",
        b"PK\x03\x04",
    ):
        assert sniff(junk) is None, junk

"""Schemathesis against the OpenAPI schema of a running service: no server error, ever.

Requests are generated from the schema (examples, boundary values, then random data, valid and
invalid) and sent over HTTP; every answer must be a documented status with a documented content
type and body, and never a 5xx. The queue is large here, so that a 503 (busy) would be a fault.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .servers import KEY, KEY_HASH, Server

pytest.importorskip("schemathesis", reason="schemathesis is not installed (the dev extra)")

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "ignored_auth",
    ]
)


def test_schemathesis_finds_no_server_error(tmp_path):
    args = ["--api-key-hash", KEY_HASH, "--max-upload-mb", "4", "--max-seconds", "120"]
    from emofuse.resources import default_model_dir

    models = ["--model", f"default={default_model_dir()}", "--model", f"alt={default_model_dir()}"]
    server = Server(tmp_path / "state", *args, *models, "--queue", "100000").start()
    try:
        with server.client() as c:  # several models by name
            assert [m["name"] for m in c.get("/v1/models").json()] == ["default", "alt"]
            r = c.post("/v1/analyze/text", json={"text": "Lovely!", "model": "alt"})
            assert r.status_code == 200 and r.json()["model"] == "alt"
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"X-API-Key: {KEY}",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "40",
            "--workers",
            "2",
            "--request-timeout",
            "60",
            "--seed",
            "20261129",
            "--suppress-health-check",
            "all",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        report = proc.stdout[-6000:] + proc.stderr[-2000:]
        assert proc.returncode == 0, report
        assert "generated" in proc.stdout, report
        assert "Traceback" not in server.output(), server.output()[-4000:]
        with server.client() as c:  # jobs the run queued: cancel them, then nothing is left
            for job in c.get("/v1/jobs", params={"limit": 500}).json():
                if job["state"] in ("queued", "running"):
                    c.delete(f"/v1/jobs/{job['id']}")
        server.assert_no_temp_files(wait=60)
    finally:
        server.stop()

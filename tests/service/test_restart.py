"""Jobs survive the service: killed and restarted on SQLite, two instances sharing PostgreSQL."""

from __future__ import annotations

import socket
import sqlite3
import time

import httpx
from sqlalchemy import create_engine, text

from .servers import Server, wait_job


def submit(client: httpx.Client, path) -> str:
    with open(path, "rb") as fh:
        r = client.post("/v1/jobs", files={"file": (path.name, fh)})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def jobs_in(db: str) -> dict[str, tuple[str, int, str | None]]:
    """``id → (state, attempts, owner)`` read from the database itself."""
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, state, attempts, owner FROM jobs")).all()
    engine.dispose()
    return {r.id: (r.state, r.attempts, r.owner) for r in rows}


def test_sqlite_restart_with_jobs_in_flight(tmp_path, media):
    state = tmp_path / "state"
    db = state / "jobs.db"
    a = Server(state).start()
    try:
        with a.client(key=None) as c:
            first = submit(c, media["speech_40s"])
            second = submit(c, media["clip"])
            wait_job(c, first, states=("running",), timeout=60)
    finally:
        a.kill()  # a crash: the running job's worker dies with the process
    rows = sqlite3.connect(db).execute("SELECT id, state FROM jobs").fetchall()
    assert dict(rows) == {first: "running", second: "queued"}

    b = Server(state).start()  # the same state folder: the same database
    try:
        with b.client(key=None) as c:
            done = [wait_job(c, j) for j in (first, second)]
            assert [j["state"] for j in done] == ["done", "done"], done
            assert [j["attempts"] for j in done] == [2, 1]  # the first was started again
            assert done[0]["result"]["predictions"]
            third = submit(c, media["speech_40s"])
            wait_job(c, third, states=("running",), timeout=60)
    finally:
        b.stop()  # a graceful stop: the running job goes back to the queue, not counted
    state_, attempts, owner = jobs_in(f"sqlite:///{db}")[third]
    assert (state_, attempts, owner) == ("queued", 0, None)

    c_ = Server(state, env={"EMOFUSE_SERVICE_MAX_ATTEMPTS": "1"}).start()
    try:
        with c_.client(key=None) as c:
            # results stored before the restarts are still there
            assert c.get(f"/v1/jobs/{first}/result.csv").status_code == 200
            assert "<figure" in c.get(f"/v1/jobs/{second}/report.html").text
            assert wait_job(c, third)["state"] == "done"
            fourth = submit(c, media["speech_40s"])
            wait_job(c, fourth, states=("running",), timeout=60)
    finally:
        c_.kill()

    d = Server(state, "--timeout", "3", env={"EMOFUSE_SERVICE_MAX_ATTEMPTS": "1"}).start()
    try:
        with d.client(key=None) as c:
            job = wait_job(c, fourth, timeout=30)
            assert job["state"] == "failed" and "stopped 1 time(s)" in job["error"], job
        d.assert_no_temp_files()  # the dead instances' temporary folders were removed

        # per-request timeouts (3 s here): a clip whose analysis takes longer is stopped
        with d.client(key=None) as c, open(media["speech_40s"], "rb") as fh:
            r = c.post("/v1/analyze", files={"file": ("long.wav", fh)})
        assert r.status_code == 503 and "POST /v1/jobs" in r.json()["error"], r.text
        assert int(r.headers["Retry-After"]) > 0
        # ... and an upload that trickles in is cut off with 408
        host, port = d.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
                b'Content-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\nRIFF'
            )
            s.settimeout(30)
            raw = b""
            while chunk := s.recv(4096):  # headers and body may arrive apart: read to the close
                raw += chunk
            answer = raw.decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 3 s" in answer, answer
        d.assert_no_temp_files()
    finally:
        d.stop()


def test_two_instances_share_one_postgresql_queue(tmp_path, media, pg_db):
    env = {"EMOFUSE_SERVICE_LEASE_SECONDS": "3", "EMOFUSE_SERVICE_POLL_SECONDS": "0.2"}
    args = ("--database", pg_db)
    a = Server(tmp_path / "a", *args, env=env).start()
    b = Server(tmp_path / "b", *args, env=env).start()
    servers = {a.pid: a, b.pid: b}
    try:
        ca, cb = a.client(key=None), b.client(key=None)
        ids = [
            submit(c, media[m]) for c, m in ((ca, "clip"), (cb, "wav"), (ca, "wav"), (cb, "clip"))
        ]
        ids += [
            c.post("/v1/jobs", json={"turns": [{"text": f"What a day {i}!"}]}).json()["id"]
            for i, c in enumerate((ca, cb, ca, cb))
        ]
        for job_id in ids:  # either instance answers for every job
            assert wait_job(cb if job_id in ids[::2] else ca, job_id)["state"] == "done"
        rows = jobs_in(pg_db.replace("postgresql://", "postgresql+psycopg://"))
        assert all(rows[j][1] == 1 for j in ids), rows  # each started once: none taken twice
        owners = {rows[j][2].split(":")[1] for j in ids}
        assert owners == {str(a.pid), str(b.pid)}, owners  # both took jobs from the queue

        # the instance running a job dies: the other takes the job back when its lease ends
        job_id = submit(ca, media["speech_40s"])
        wait_job(ca, job_id, states=("running",), timeout=60)
        rows = jobs_in(pg_db.replace("postgresql://", "postgresql+psycopg://"))
        owner_pid = int(rows[job_id][2].split(":")[1])
        servers[owner_pid].kill()
        survivor = b if owner_pid == a.pid else a
        with survivor.client(key=None) as c:
            job = wait_job(c, job_id, timeout=180)
        assert job["state"] == "done" and job["attempts"] == 2, job
        survivor.assert_no_temp_files()
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()


def test_postgresql_restart_with_a_job_in_flight(tmp_path, media, pg_db):
    state = tmp_path / "state"
    a = Server(state, "--database", pg_db).start()
    try:
        with a.client(key=None) as c:
            job_id = submit(c, media["speech_40s"])
            wait_job(c, job_id, states=("running",), timeout=60)
    finally:
        a.kill()
    started = time.monotonic()
    b = Server(state, "--database", pg_db).start()
    try:
        with b.client(key=None) as c:
            job = wait_job(c, job_id, timeout=180)
        assert job["state"] == "done" and job["attempts"] == 2, job
        # taken back at start (its process is gone), not after a lease ran out
        assert time.monotonic() - started < 170
    finally:
        b.stop()

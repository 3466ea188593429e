"""The job queue on SQLite and on a real PostgreSQL: atomic claims, leases, recovery, cancel."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import inspect, select, update

from emofuse.service.jobs import (
    Job,
    JobMedia,
    JobStore,
    QueueFull,
    instance_id,
    make_engine,
    migrate,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    db = request.getfixturevalue("pg_db")
    return db.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def engine(url):
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def add(store: JobStore, path, n: int = 1, max_queued: int = 10_000) -> list[str]:
    return [
        store.create(
            kind="media",
            model="default",
            language="en",
            filename=f"clip{i}.wav",
            suffix=".wav",
            media=path,
            duration=1.0,
            max_queued=max_queued,
        ).id
        for i in range(n)
    ]


@pytest.fixture
def media(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(os.urandom(2_500_000))  # three chunks
    return p


def test_migrations_are_idempotent_and_create_the_tables(engine):
    migrate(engine)  # a second start, or a second instance: nothing to do
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "job_media", "alembic_version"} <= tables


def test_media_round_trip_and_queue_bound(engine, media, tmp_path):
    store = JobStore(engine, instance_id())
    (job_id,) = add(store, media)
    out = tmp_path / "out.bin"
    store.write_media(job_id, out)
    assert out.read_bytes() == media.read_bytes()
    with pytest.raises(QueueFull):
        add(store, media, max_queued=1)


def test_no_job_is_claimed_twice_under_concurrent_claimers(engine, media):
    tiny = media.with_name("tiny.bin")
    tiny.write_bytes(b"x")
    ids = set(add(JobStore(engine, instance_id()), tiny, 40))
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        store = JobStore(engine, instance_id())
        while (job := store.claim()) is not None:
            with lock:
                claimed.append((job.id, store.owner))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [job_id for job_id, _ in claimed]
    assert sorted(taken) == sorted(ids)  # every job once, none twice
    assert len({owner for _, owner in claimed}) > 1
    with engine.connect() as conn:
        rows = conn.execute(select(Job.state, Job.attempts, Job.owner)).all()
    assert all(r.state == "running" and r.attempts == 1 for r in rows)


def test_lease_recovery_requeues_then_fails(engine, media):
    dead = JobStore(engine, "otherhost:12345:abcd")
    (job_id,) = add(dead, media)
    assert dead.claim().id == job_id
    me = JobStore(engine, instance_id())
    assert me.recover(lease_seconds=60, max_attempts=2) == {"requeued": [], "failed": []}
    with engine.begin() as conn:  # the other host stopped renewing its lease
        conn.execute(update(Job).values(heartbeat_at=time.time() - 120))
    assert me.recover(lease_seconds=60, max_attempts=2) == {"requeued": [job_id], "failed": []}
    assert me.get(job_id).state == "queued"
    again = JobStore(engine, "otherhost:12345:efgh")
    assert again.claim().attempts == 2
    with engine.begin() as conn:
        conn.execute(update(Job).values(heartbeat_at=time.time() - 120))
    assert me.recover(lease_seconds=60, max_attempts=2) == {"requeued": [], "failed": [job_id]}
    view = me.get(job_id)
    assert view.state == "failed" and "stopped 2 time(s)" in view.error
    with engine.connect() as conn:  # its media is gone with it
        assert conn.execute(select(JobMedia.seq).where(JobMedia.job_id == job_id)).all() == []
    assert not again.finish(job_id, "{}", "<html>")  # the old worker cannot write it back


def test_a_dead_process_of_this_host_is_recovered_at_once(engine, media):
    import socket
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()  # a process id that no longer runs
    dead = JobStore(engine, f"{socket.gethostname()}:{proc.pid}:dead")
    (job_id,) = add(dead, media)
    dead.claim()
    me = JobStore(engine, instance_id())
    assert me.recover(lease_seconds=3600, max_attempts=3)["requeued"] == [job_id]


def test_cancel_delete_release_and_heartbeat(engine, media):
    store = JobStore(engine, instance_id())
    queued, running = add(store, media, 2)
    assert store.claim().id == queued
    view = store.cancel(queued)  # running now: only asked to stop
    assert view.state == "running" and view.cancel_requested
    assert store.heartbeat([queued]) == {queued}
    assert store.cancelled(queued) and store.get(queued).state == "cancelled"
    view = store.cancel(running)  # still queued: cancelled at once
    assert view.state == "cancelled"
    assert store.cancel("nope") is None
    assert store.delete(queued) and store.get(queued) is None
    (third,) = add(store, media)
    assert store.claim().id == third and store.release(third)
    view = store.get(third)
    assert view.state == "queued" and view.attempts == 0
    assert store.purge(older_than_s=0) >= 1

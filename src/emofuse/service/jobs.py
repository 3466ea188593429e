"""Jobs that outlive a request: tables, and a queue several service instances can share.

A job is one media file (or one dialogue) to analyse. Its row holds its state, progress, the
worker that holds it and, once done, the :class:`~emofuse.analyze.result.Analysis` as JSON and
the HTML report. The uploaded media waits in ``job_media`` (chunks of 1 MiB), so any instance
that shares the database can run the job; it is deleted when the job ends.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled`` (``queued`` →
``cancelled`` too). Times are seconds since the epoch (UTC), as floats, the same on every
database.

Claiming is atomic: on PostgreSQL the next queued row is locked with ``SELECT … FOR UPDATE SKIP
LOCKED`` (concurrent claimers skip it instead of waiting), and on every database the update
that takes it is guarded (``WHERE id = … AND state = 'queued'``, one row or none), so no job is
taken twice. A running job's worker renews its lease (``heartbeat_at``); a job whose worker has
died is taken back by :meth:`JobStore.recover`: queued again while it has attempts left, else
marked failed with the reason. It is never lost silently.

The schema is created and upgraded by the Alembic migrations shipped in
``emofuse/service/migrations`` (:func:`migrate`), run when the service starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, deferred, mapped_column, sessionmaker

from emofuse.records import process_alive

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
CHUNK = 1024 * 1024
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    """The service's tables."""


class Job(Base):
    """One analysis job (see the module docstring for the states)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # "media" or "dialogue"
    model: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(35))
    filename: Mapped[str] = mapped_column(String(255))
    suffix: Mapped[str] = mapped_column(String(16))  # from the content, not the name
    size: Mapped[int] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_json: Mapped[str | None] = deferred(mapped_column(Text, nullable=True))
    report_html: Mapped[str | None] = deferred(mapped_column(Text, nullable=True))

    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)


class JobMedia(Base):
    """The uploaded media of a job that has not ended, in chunks."""

    __tablename__ = "job_media"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class JobView:
    """A job as the API shows it (no media, no result bodies)."""

    id: str
    state: str
    kind: str
    model: str
    language: str
    filename: str
    suffix: str
    size: int
    duration: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: float
    step: str | None
    attempts: int
    owner: str | None
    error: str | None
    cancel_requested: bool

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The view of a loaded row."""
        return cls(**{f: getattr(job, f) for f in cls.__dataclass_fields__})


class QueueFull(Exception):
    """The queue holds as many jobs as it may."""


def instance_id() -> str:
    """``host:pid:random`` — names the process that holds a job (see :meth:`JobStore.recover`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"



def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration (Alembic, run in-process).

    Several instances starting at once take turns: a PostgreSQL advisory lock, or a file lock
    beside a SQLite database.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", os.fspath(MIGRATIONS))
    lock: Any = contextlib.nullcontext()
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        from filelock import FileLock

        lock = FileLock(f"{engine.url.database}.migrate.lock")
    with lock, engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7106001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class JobStore:
    """The job table, as the service uses it (every method is one short transaction).

    Args:
        engine: The database (see :func:`make_engine`; the schema must be migrated).
        owner: This instance's name (:func:`instance_id`).
    """

    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    # -- submitting -------------------------------------------------------------------------
    def create(
        self,
        *,
        kind: str,
        model: str,
        language: str,
        filename: str,
        suffix: str,
        media: Path,
        duration: float | None,
        max_queued: int,
    ) -> JobView:
        """Queue a job with the file ``media`` (copied into the database).

        Raises:
            QueueFull: ``max_queued`` jobs are already waiting.
        """
        now = time.time()
        job = Job(
            id=uuid.uuid4().hex,
            state="queued",
            kind=kind,
            model=model,
            language=language,
            filename=filename,
            suffix=suffix,
            size=media.stat().st_size,
            duration=duration,
            created_at=now,
            attempts=0,
            progress=0.0,
            cancel_requested=False,
        )
        with self._session() as s:
            queued = s.scalar(select(func.count()).select_from(Job).where(Job.state == "queued"))
            if (queued or 0) >= max_queued:
                raise QueueFull
            s.add(job)
            s.flush()
            with media.open("rb") as fh:
                seq = 0
                while chunk := fh.read(CHUNK):
                    s.add(JobMedia(job_id=job.id, seq=seq, data=chunk))
                    seq += 1
                    if seq % 16 == 0:
                        s.flush()
        return JobView.of(job)

    # -- reading ----------------------------------------------------------------------------
    def get(self, job_id: str) -> JobView | None:
        """The job, or ``None``."""
        with self._session() as s:
            job = s.get(Job, job_id)
            return None if job is None else JobView.of(job)

    def result(self, job_id: str, what: str) -> str | None:
        """The finished job's ``"result_json"`` or ``"report_html"`` (``None`` until done)."""
        column = {"result_json": Job.result_json, "report_html": Job.report_html}[what]
        with self._session() as s:
            return s.scalar(select(column).where(Job.id == job_id))

    def list(self, limit: int = 50) -> list[JobView]:
        """The newest jobs first."""
        with self._session() as s:
            rows = s.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit))
            return [JobView.of(j) for j in rows]

    def counts(self) -> dict[str, int]:
        """``state → number of jobs``."""
        with self._session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {state: int(n) for state, n in rows}

    def write_media(self, job_id: str, path: Path) -> None:
        """Write the job's media to ``path``."""
        with self._session() as s, path.open("wb") as fh:
            for (data,) in s.execute(
                select(JobMedia.data).where(JobMedia.job_id == job_id).order_by(JobMedia.seq)
            ):
                fh.write(data)

    # -- working ----------------------------------------------------------------------------
    def claim(self) -> JobView | None:
        """Take the oldest queued job for this instance, or ``None`` when there is none."""
        for _ in range(5):  # another instance may take a candidate first: try the next
            with self._session() as s:
                query = select(Job.id).where(Job.state == "queued").order_by(Job.created_at)
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                job_id = s.scalar(query.limit(1))
                if job_id is None:
                    return None
                now = time.time()
                taken = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "queued")
                    .values(
                        state="running",
                        owner=self.owner,
                        started_at=now,
                        heartbeat_at=now,
                        attempts=Job.attempts + 1,
                        step="starting",
                    )
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:
                    return JobView.of(s.get(Job, job_id))  # type: ignore[arg-type]
        return None

    def heartbeat(self, job_ids: list[str]) -> set[str]:
        """Renew the lease of this instance's running jobs; returns those asked to cancel."""
        if not job_ids:
            return set()
        with self._session() as s:
            s.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.owner == self.owner, Job.state == "running")
                .values(heartbeat_at=time.time())
                .execution_options(synchronize_session=False)
            )
            rows = s.execute(
                select(Job.id, Job.state, Job.owner, Job.cancel_requested).where(
                    Job.id.in_(job_ids)
                )
            ).all()
        return {
            r.id
            for r in rows
            if r.cancel_requested or r.state != "running" or r.owner != self.owner
        }

    def report_progress(self, job_id: str, progress: float, step: str) -> None:
        """Record how far the job is (``progress`` in [0, 1])."""
        with self._session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.owner == self.owner, Job.state == "running")
                .values(progress=progress, step=step[:200], heartbeat_at=time.time())
                .execution_options(synchronize_session=False)
            )

    def _end(self, job_id: str, **values: Any) -> bool:
        with self._session() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.owner == self.owner, Job.state == "running")
                .values(finished_at=time.time(), **values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount == 1:
                s.execute(delete(JobMedia).where(JobMedia.job_id == job_id))
            return done.rowcount == 1

    def finish(self, job_id: str, result_json: str, report_html: str) -> bool:
        """Store the result; ``False`` when the job is no longer this instance's."""
        return self._end(
            job_id,
            state="done",
            progress=1.0,
            step="done",
            result_json=result_json,
            report_html=report_html,
        )

    def fail(self, job_id: str, error: str) -> bool:
        """Mark the job failed with ``error`` (one line)."""
        return self._end(job_id, state="failed", step="failed", error=error)

    def cancelled(self, job_id: str) -> bool:
        """Mark the running job cancelled (its cancel was seen)."""
        return self._end(job_id, state="cancelled", step="cancelled", error="cancelled")

    def release(self, job_id: str) -> bool:
        """Queue a running job of this instance again (it is stopping); not counted as an attempt."""
        with self._session() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.owner == self.owner, Job.state == "running")
                .values(
                    state="queued",
                    owner=None,
                    progress=0.0,
                    step="queued again: the service stopped",
                    attempts=func.max(Job.attempts - 1, 0)
                    if self.engine.dialect.name == "sqlite"
                    else func.greatest(Job.attempts - 1, 0),
                )
                .execution_options(synchronize_session=False)
            )
            return done.rowcount == 1

    # -- the client's cancel / delete ---------------------------------------------------------
    def cancel(self, job_id: str) -> JobView | None:
        """Cancel a queued job now, ask a running one to stop; ``None`` if there is no such job."""
        with self._session() as s:
            now = time.time()
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "queued")
                .values(state="cancelled", step="cancelled", error="cancelled", finished_at=now)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "running")
                .values(cancel_requested=True, step="cancelling")
                .execution_options(synchronize_session=False)
            )
            job = s.get(Job, job_id)
            if job is None:
                return None
            if job.state == "cancelled":
                s.execute(delete(JobMedia).where(JobMedia.job_id == job_id))
            s.refresh(job)
            return JobView.of(job)

    def delete(self, job_id: str) -> bool:
        """Delete a job that has ended, with its result; ``False`` if there is none such."""
        with self._session() as s:
            gone = s.execute(delete(Job).where(Job.id == job_id, Job.state.not_in(ACTIVE))).rowcount
            s.execute(delete(JobMedia).where(JobMedia.job_id == job_id))
            return gone == 1

    # -- upkeep ----------------------------------------------------------------------------------
    def recover(self, lease_seconds: float, max_attempts: int) -> dict[str, list[str]]:
        """Take back running jobs whose worker is gone.

        A job is taken back when its lease has run out, or at once when its worker was a
        process of this host that no longer runs (or an earlier life of this process id). It
        is queued again while it has had fewer than ``max_attempts`` starts, else failed.

        Returns:
            ``{"requeued": [ids], "failed": [ids]}``.
        """
        host, pid, _ = self.owner.split(":", 2)
        now = time.time()
        out: dict[str, list[str]] = {"requeued": [], "failed": []}
        with self._session() as s:
            rows = s.execute(
                select(Job.id, Job.owner, Job.heartbeat_at, Job.attempts).where(
                    Job.state == "running"
                )
            ).all()
            for r in rows:
                if r.owner == self.owner:
                    continue
                stale = r.heartbeat_at is None or now - r.heartbeat_at > lease_seconds
                o_host, o_pid, _ = (r.owner or "::").split(":", 2) if r.owner else ("", "0", "")
                dead_here = o_host == host and (
                    o_pid == pid or (o_pid.isdigit() and not process_alive(int(o_pid)))
                )
                if not (stale or dead_here):
                    continue
                guard = (Job.id == r.id, Job.state == "running", Job.owner == r.owner)
                if r.attempts >= max_attempts:
                    values: dict[str, Any] = {
                        "state": "failed",
                        "step": "failed",
                        "finished_at": now,
                        "error": f"the worker running this job stopped {r.attempts} time(s) "
                        "(service restarted or crashed); not tried again",
                    }
                    key = "failed"
                else:
                    values = {
                        "state": "queued",
                        "owner": None,
                        "progress": 0.0,
                        "step": "queued again: its worker stopped",
                    }
                    key = "requeued"
                moved = s.execute(
                    update(Job)
                    .where(*guard)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount == 1:
                    out[key].append(r.id)
                    if key == "failed":
                        s.execute(delete(JobMedia).where(JobMedia.job_id == r.id))
        return out

    def purge(self, older_than_s: float) -> int:
        """Delete ended jobs that finished more than ``older_than_s`` seconds ago."""
        cutoff = time.time() - older_than_s
        with self._session() as s:
            ids = list(
                s.scalars(select(Job.id).where(Job.state.not_in(ACTIVE), Job.finished_at < cutoff))
            )
            if ids:
                s.execute(delete(JobMedia).where(JobMedia.job_id.in_(ids)))
                s.execute(delete(Job).where(Job.id.in_(ids)))
        return len(ids)


def job_json(view: JobView, result: str | None = None) -> dict[str, Any]:
    """The API's JSON of a job (with the parsed result when given)."""
    out: dict[str, Any] = {
        k: getattr(view, k) for k in view.__dataclass_fields__ if k not in ("owner", "suffix")
    }
    if result is not None:
        out["result"] = json.loads(result)
    return out


__all__ = [
    "ACTIVE",
    "STATES",
    "Job",
    "JobMedia",
    "JobStore",
    "JobView",
    "QueueFull",
    "instance_id",
    "job_json",
    "make_engine",
    "migrate",
]

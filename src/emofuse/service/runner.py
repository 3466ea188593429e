"""Runs the job queue: claims jobs when a media thread is free, renews leases, recovers.

Two threads per service instance:

* the **dispatcher** claims the oldest queued job whenever a media thread of the
  :class:`~emofuse.service.inference.MediaPool` is idle (so an instance never holds more jobs
  than it runs, and other instances sharing the database take the rest), and runs it there;
* the **keeper** renews the lease of this instance's running jobs, stops those a client
  cancelled (on any instance), takes back jobs whose worker died
  (:meth:`~emofuse.service.jobs.JobStore.recover`) and deletes old finished jobs.

A job's media is written from the database to a temporary folder of its own, which is removed
whatever happens. When the service stops, running jobs are queued again (not counted as an
attempt); when it dies, the next start (or another instance, once the lease runs out) takes
them back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from emofuse.service.errors import ServiceError, one_line
from emofuse.service.inference import MediaPool, Stopped, Token, progress_hook
from emofuse.service.jobs import JobStore, JobView
from emofuse.service.limits import remove_tree

log = logging.getLogger("emofuse.service")


class JobRunner:
    """The dispatcher and keeper threads of one instance (see the module docstring).

    Args:
        store: The job database.
        pool: The media threads.
        temp: This instance's temporary folder.
        settings: The :class:`~emofuse.service.settings.ServiceSettings`.
    """

    def __init__(self, store: JobStore, pool: MediaPool, temp: Path, settings: Any) -> None:
        self.store = store
        self.pool = pool
        self.temp = temp
        self.settings = settings
        self.running: dict[str, Token] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Recover what a dead predecessor left running, then start both threads."""
        found = self.store.recover(self.settings.lease_seconds, self.settings.max_attempts)
        if found["requeued"] or found["failed"]:
            log.warning(
                "jobs left running by a stopped worker: %d queued again, %d failed",
                len(found["requeued"]),
                len(found["failed"]),
            )
        for target, name in ((self._dispatch, "jobs-dispatch"), (self._keep, "jobs-keeper")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was queued here: look now instead of at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job if this instance runs it (the database flag reaches other instances)."""
        with self._lock:
            token = self.running.get(job_id)
        if token is not None:
            token.stop("cancelled")

    def stop(self, wait: float = 10.0) -> None:
        """Stop claiming; ask running jobs to stop and queue them again (waits ``wait`` s)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            tokens = list(self.running.values())
        for token in tokens:
            token.stop("shutdown")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                if not self.running:
                    break
            time.sleep(0.05)
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- threads -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        # jobs wait for the models: loading a second copy of a model in another thread while
        # the first is still importing its libraries can deadlock on the import locks
        for slot in self.pool.models.values():
            while not slot.loaded.wait(0.5):
                if self._stop.is_set():
                    return
        while not self._stop.is_set():
            job = None
            if self.pool.free():
                try:
                    job = self.store.claim()
                except Exception:  # the database is away: try again at the next poll
                    log.exception("claiming a job failed")
            if job is None:
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()
                continue
            token = Token(deadline=time.monotonic() + self.settings.job_timeout)
            with self._lock:
                self.running[job.id] = token
            try:
                self.pool.submit(lambda job=job, token=token: self._run(job, token), bounded=False)
            except ServiceError:  # stopping
                with self._lock:
                    self.running.pop(job.id, None)
                self.store.release(job.id)

    def _keep(self) -> None:
        beat = max(0.2, self.settings.lease_seconds / 3)
        last_recover = last_purge = 0.0
        while not self._stop.wait(beat):
            try:
                with self._lock:
                    ids = list(self.running)
                for job_id in self.store.heartbeat(ids):
                    with self._lock:
                        token = self.running.get(job_id)
                    if token is not None:
                        token.stop("cancelled")
                now = time.monotonic()
                if now - last_recover >= self.settings.lease_seconds / 2:
                    last_recover = now
                    self.store.recover(self.settings.lease_seconds, self.settings.max_attempts)
                if now - last_purge >= 3600:
                    last_purge = now
                    self.store.purge(self.settings.keep_jobs_hours * 3600)
            except Exception:  # the database is away for a moment: the next beat tries again
                log.exception("job upkeep failed")

    def _run(self, job: JobView, token: Token) -> None:
        """Run one claimed job on a media thread."""
        from emofuse.analyze.report import render

        folder = self.temp / f"job-{job.id}-{uuid.uuid4().hex[:6]}"
        store = self.store
        try:
            folder.mkdir(parents=True)
            stem = Path(job.filename).stem or "media"
            path = folder / (("media" if job.kind == "media" else stem) + job.suffix)
            store.write_media(job.id, path)
            token.check()
            hook = progress_hook(token, lambda p, step: store.report_progress(job.id, p, step))
            analysis = self.pool.analyze(
                job.model,
                path,
                name=_stem(job.filename),
                filename=job.filename,
                language=job.language,
                hook=hook,
            )
            token.check()
            store.finish(job.id, analysis.to_json(indent=None), render(analysis))
        except Stopped as s:
            if s.reason == "shutdown":
                store.release(job.id)
            elif s.reason == "timeout":
                store.fail(job.id, f"the job ran longer than {self.settings.job_timeout:g} s")
            else:
                store.cancelled(job.id)
        except ServiceError as e:
            store.fail(job.id, e.message)
        except Exception as e:  # a bug or a broken model: the job says so, the service goes on
            log.exception("job %s failed", job.id)
            store.fail(job.id, one_line(f"internal error: {type(e).__name__}: {e}"))
        finally:
            remove_tree(folder)
            with self._lock:
                self.running.pop(job.id, None)
            self._wake.set()


def _stem(filename: str) -> str:
    return Path(filename).stem or "media"


__all__ = ["JobRunner"]

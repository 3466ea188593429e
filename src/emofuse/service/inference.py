"""The service's way to the models: micro-batched text, a bounded pool for media.

* :class:`TextBatcher` — text requests of one model wait a few milliseconds for others, then
  run through the model together in one thread of their own (one forward pass for up to
  ``text_batch`` utterances), so the event loop stays free and throughput grows with load;
* :class:`MediaPool` — media analyses (``POST /v1/analyze`` and jobs) run on ``workers``
  threads, each with an :class:`~emofuse.analyze.Analyzer` of its own per model; at most
  ``queue`` more wait, beyond that :class:`Busy` (503 with ``Retry-After``);
* :class:`Token` — how a running analysis is stopped: the analyzer's progress hook checks it
  and raises :class:`Stopped` (a cancel, a deadline, the service stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emofuse.errors import EmofuseWarning, InputError
from emofuse.records import Utterance
from emofuse.schema import Prediction
from emofuse.service.errors import ServiceError, busy, one_line

DATASET = "service"
log = logging.getLogger("emofuse.service")

# Where in a media analysis each step of the analyzer's hook lies, as a share of the whole.
_STEPS = (("segment", 0.0, 0.55), ("features", 0.55, 0.9), ("inference", 0.9, 0.97))


class TextAnalysis(BaseModel):
    """The answer to ``POST /v1/analyze/text``.

    Attributes:
        model: The name of the model that answered.
        predictions: One :class:`~emofuse.schema.Prediction` per utterance or turn, in order.
        skipped: ``id → problem`` for turns of a dialogue that could not be analysed.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    predictions: list[Prediction]
    skipped: dict[str, str] = Field(default_factory=dict)


class Stopped(BaseException):
    """Raised inside an analysis whose :class:`Token` was stopped (``reason`` says why).

    A ``BaseException``, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Token:
    """Stops an analysis: :meth:`stop` with a reason, or a deadline (``reason="timeout"``)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        """Ask the analysis to stop at its next progress report."""
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        """Raise :class:`Stopped` if asked to stop or past the deadline."""
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "timeout"
        if self.reason is not None:
            raise Stopped(self.reason)


def progress_hook(
    token: Token, report: Callable[[float, str], None] | None = None, every: float = 0.5
) -> Any:
    """An analyzer hook that checks ``token`` and calls ``report(progress, step)``.

    ``progress`` in [0, 1] never goes down; ``report`` is called at most every ``every``
    seconds, and whenever the step changes.
    """
    state = {"last": 0.0, "progress": 0.0, "step": ""}

    def hook(
        step: str, artifact: Any = None, *, total: int | None = None, completed: int | None = None
    ) -> None:
        token.check()
        if report is None:
            return
        lo, hi = next(((a, b) for name, a, b in _STEPS if step.startswith(name)), (None, None))
        if lo is not None and hi is not None:
            share = (completed or 0) / total if total else 0.0
            state["progress"] = max(state["progress"], lo + (hi - lo) * min(1.0, share))
        now = time.monotonic()
        if step != state["step"] or now - state["last"] >= every:
            state["last"], state["step"] = now, step
            label = f"{step} {completed}/{total}" if total else step
            report(round(state["progress"], 4), label)

    return hook


# -- models ------------------------------------------------------------------------------------
@dataclass
class ModelSlot:
    """One named model: its folder, and its copy for text (loaded once, used by one thread)."""

    name: str
    folder: Path
    model: Any = None
    error: str | None = None
    loaded: threading.Event = field(default_factory=threading.Event)

    def load(self) -> None:
        """Load the model and warm up its text extractor (errors kept in ``error``)."""
        from emofuse.errors import EmofuseError
        from emofuse.models.base import load_model

        try:
            model = load_model(self.folder)
            if "text" in model.inputs:
                model.load_extractors(["text"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.predict([Utterance(id="warm-up", dataset=DATASET, text="Hello there.")])
            self.model = model
        except EmofuseError as e:
            self.error = one_line(str(e))
        except Exception as e:  # a broken folder must not take the service down
            self.error = one_line(f"{type(e).__name__}: {e}")
        finally:
            self.loaded.set()

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says about it."""
        out: dict[str, Any] = {"name": self.name, "ready": self.model is not None}
        if self.model is not None:
            spec = self.model.spec
            out |= {
                "model": self.model.name,
                "task": spec.name,
                "inputs": sorted(self.model.inputs),
                "labels": list(spec.emotion_labels or []),
                "sentiment_range": spec.sentiment_range,
            }
        if self.error:
            out["error"] = self.error
        return out


# -- text ----------------------------------------------------------------------------------------
@dataclass
class _Request:
    utts: list[Utterance]
    future: asyncio.Future[Any]
    abandoned: bool = False


class TextBatcher:
    """Micro-batches the text requests of one model.

    Args:
        slot: The model.
        max_batch: Most utterances in one forward pass (a longer dialogue runs alone).
        wait_s: How long the first request of a batch waits for others.
        max_pending: Requests that may wait; beyond it :meth:`predict` raises a 503.
    """

    def __init__(self, slot: ModelSlot, max_batch: int, wait_s: float, max_pending: int) -> None:
        self.slot = slot
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_pending = max_pending
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"text-{slot.name}")
        self.queue: asyncio.Queue[_Request] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start gathering (inside the running event loop)."""
        self.queue = asyncio.Queue(self.max_pending)
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop gathering; requests still waiting get a 503."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while self.queue is not None and not self.queue.empty():
            r = self.queue.get_nowait()
            if not r.future.done():
                r.future.set_exception(busy("stopping", 5))
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def predict(
        self, utts: list[Utterance], timeout: float
    ) -> tuple[list[Prediction], dict[str, str]]:
        """Predictions for ``utts`` (one request), and ``id → problem`` of those left out.

        Raises:
            ServiceError: 503 when the queue is full or no answer came within ``timeout``
                (with ``Retry-After``); 422 when no utterance could be analysed (the problem
                named); 503 while the model is still loading past ``timeout``.
        """
        assert self.queue is not None, "start() the batcher first"
        loop = asyncio.get_running_loop()
        request = _Request(utts, loop.create_future())
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:
            raise busy(f"{self.max_pending} text requests waiting", 1) from None
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except TimeoutError:
            request.abandoned = True
            raise busy(f"no answer within {timeout:g} s", 2) from None

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if self.wait_s > 0 and self.queue.qsize() + 1 < self.max_batch:
                await asyncio.sleep(self.wait_s)  # let others join
            batch, n = [first], len(first.utts)
            while n < self.max_batch and not self.queue.empty():
                nxt = self.queue.get_nowait()
                batch.append(nxt)
                n += len(nxt.utts)
            batch = [r for r in batch if not r.abandoned and not r.future.done()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as e:  # the model failed as a whole: every request learns why
                log.exception("text batch failed")
                results = [
                    ServiceError(422, f"the model could not analyse this text: {one_line(str(e))}")
                ] * len(batch)
            for r, result in zip(batch, results, strict=True):
                if r.future.done():
                    continue
                if isinstance(result, BaseException):
                    r.future.set_exception(result)
                else:
                    r.future.set_result(result)

    def _run(self, batch: list[_Request]) -> list[Any]:
        """One forward pass over every request of ``batch`` (in the batcher's thread)."""
        from emofuse.models.inference import Inference

        self.slot.loaded.wait()
        if self.slot.model is None:
            return [
                ServiceError(503, f"model {self.slot.name!r} failed to load: {self.slot.error}", 30)
            ] * len(batch)
        model = self.slot.model
        utts: list[Utterance] = []
        for k, r in enumerate(batch):
            for i, u in enumerate(r.utts):
                utts.append(
                    u.model_copy(
                        update={
                            "id": f"r{k}u{i}",
                            "dialogue_id": None if u.dialogue_id is None else f"r{k}",
                        }
                    )
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmofuseWarning)
            table = model.table(utts)
            predictions = (
                Inference(model, batch_size=max(len(utts), 1)).predictions(table)
                if table.items
                else []
            )
        by_id = {p.id: p for p in predictions}
        results: list[Any] = []
        for k, r in enumerate(batch):
            preds: list[Prediction] = []
            skipped: dict[str, str] = {}
            for i, u in enumerate(r.utts):
                p = by_id.get(f"r{k}u{i}")
                if p is None:
                    skipped[u.id] = one_line(
                        table.skipped.get(f"r{k}u{i}", "could not be analysed")
                    )
                else:
                    preds.append(p.model_copy(update={"id": u.id, "dialogue_id": u.dialogue_id}))
            if not preds:
                first_id, problem = next(iter(skipped.items()))
                message = (
                    f"the text cannot be analysed: {problem}"
                    if len(r.utts) == 1
                    else f"no turn could be analysed; {first_id}: {problem}"
                )
                results.append(ServiceError(422, message))
            else:
                results.append((preds, skipped))
        return results


# -- media ---------------------------------------------------------------------------------------
class MediaPool:
    """``workers`` threads for media analyses, and a bounded wait for them.

    Args:
        workers: Threads (each keeps an analyzer per model it has used).
        queue: Analyses that may wait for a thread beyond those running.
        models: The model slots by name (their folders are loaded again per thread).
        cues: Whether analyzers find cues.
    """

    def __init__(self, workers: int, queue: int, models: dict[str, ModelSlot], cues: bool) -> None:
        self.workers = workers
        self.limit = workers + queue
        self.models = models
        self.cues = cues
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="media")
        self._lock = threading.Lock()
        self.pending = 0
        self._local = threading.local()
        self._building = threading.RLock()

    def free(self) -> bool:
        """Whether a thread is idle now (jobs are claimed only then)."""
        with self._lock:
            return self.pending < self.workers

    def submit(self, fn: Callable[[], Any], *, bounded: bool = True) -> Future[Any]:
        """Run ``fn`` on a media thread.

        Raises:
            ServiceError: 503 with ``Retry-After`` when ``bounded`` and the pool is full.
        """
        with self._lock:
            if bounded and self.pending >= self.limit:
                raise busy(f"{self.pending} media analyses running or waiting", 10)
            self.pending += 1
        try:
            fut = self.executor.submit(fn)
        except RuntimeError:  # shut down
            with self._lock:
                self.pending -= 1
            raise busy("stopping", 10) from None
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self.pending -= 1

    def analyzer(self, name: str) -> Any:
        """This thread's analyzer of model ``name`` (built on first use)."""
        from emofuse.analyze import Analyzer

        analyzers = self._local.__dict__.setdefault("analyzers", {})
        if name not in analyzers:
            self.models[name].loaded.wait()  # not while the text copy still imports its libraries
            with self._building:  # one at a time, for the same reason
                analyzers[name] = Analyzer(self.models[name].folder, cues=self.cues)
        return analyzers[name]

    def analyze(
        self,
        model: str,
        path: Path,
        *,
        name: str,
        filename: str,
        language: str,
        hook: Any,
    ) -> Any:
        """Analyse ``path`` with model ``model`` on this thread; the result names ``filename``.

        Returns:
            The :class:`~emofuse.analyze.result.Analysis`, its ``source`` (and each
            prediction's) the client's file name instead of the server's path.

        Raises:
            ServiceError: 422 naming the problem when the media cannot be analysed, or when no
                segment could be (a recording without speech: the analysis's notes say why).
            Stopped: the token behind ``hook`` was stopped.
        """
        from emofuse.analyze.analyzer import language_tag
        from emofuse.errors import EmofuseError

        analyzer = self.analyzer(model)
        analyzer.hook = hook
        first = not getattr(analyzer, "_service_warm", False)
        try:
            analyzer.language = language_tag(language)
            # a thread's first analysis imports the media libraries: one thread at a time
            with self._building if first else contextlib.nullcontext(), warnings.catch_warnings():
                warnings.simplefilter("ignore", EmofuseWarning)
                analysis = analyzer.analyze(path, name=name)
            analyzer._service_warm = True
        except InputError as e:
            problem = e.problem if e.path in (None, str(path)) else str(e)
            raise ServiceError(
                422, f"{filename}: {problem}".replace(str(path.parent), "")
            ) from None
        except EmofuseError as e:
            raise ServiceError(
                422, f"{filename}: {one_line(str(e))}".replace(str(path.parent), "")
            ) from None
        finally:
            analyzer.hook = None
        analysis = analysis.model_copy(
            update={
                "source": filename,
                "predictions": [
                    p.model_copy(update={"source": filename}) for p in analysis.predictions
                ],
                "transcript": None,
            }
        )
        if not analysis.predictions:
            why = "; ".join(analysis.notes) or "nothing could be analysed"
            raise ServiceError(422, f"{filename}: {why}")
        return analysis

    def shutdown(self) -> None:
        """Stop taking work; threads finish what they run."""
        self.executor.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "MediaPool",
    "ModelSlot",
    "Stopped",
    "TextAnalysis",
    "TextBatcher",
    "Token",
    "progress_hook",
]

"""One progress-hook protocol for every long step (after pyannote.audio's pipeline hooks).

A long-running function takes ``hook=`` and calls it as::

    hook(step, artifact=None, *, total=None, completed=None)

* ``step`` — what is running, e.g. ``"features minilm"``, ``"inference"``, ``"train epoch 3"``;
* ``artifact`` — the step's output when it ends (a report, a batch's outputs), else ``None``;
* ``total`` / ``completed`` — how many units the step has and how many are done so far
  (cumulative, not increments), when it is countable.

:class:`ProgressHook` draws rich progress bars on a terminal and prints plain periodic lines
otherwise (CI, ``nohup``, log files), :class:`TimingHook` records seconds per step,
:class:`ArtifactHook` keeps each step's artifact, and :class:`Hooks` calls several.

Example:
    >>> seen = []
    >>> hook = Hooks(lambda step, artifact=None, **kw: seen.append((step, kw.get("completed"))))
    >>> hook("features minilm", total=10, completed=4)
    >>> seen
    [('features minilm', 4)]
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Protocol


class Hook(Protocol):
    """The hook signature (see the module docstring)."""

    def __call__(
        self,
        step: str,
        artifact: Any = None,
        *,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Report progress of ``step`` (or its ``artifact`` when it ends)."""


def call_hook(
    hook: Hook | None,
    step: str,
    artifact: Any = None,
    *,
    total: int | None = None,
    completed: int | None = None,
) -> None:
    """Call ``hook`` if there is one (so callers need no ``if hook`` of their own)."""
    if hook is not None:
        hook(step, artifact, total=total, completed=completed)


class Hooks:
    """Several hooks called in turn.

    Args:
        hooks: Hooks (``None`` entries are ignored).
    """

    def __init__(self, *hooks: Hook | None) -> None:
        self.hooks = [h for h in hooks if h is not None]

    def __call__(
        self,
        step: str,
        artifact: Any = None,
        *,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Forward to every hook."""
        for h in self.hooks:
            h(step, artifact, total=total, completed=completed)


class TimingHook:
    """Seconds from each step's first to its last call, in ``seconds`` (``step → s``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._first: dict[str, float] = {}

    def __call__(
        self,
        step: str,
        artifact: Any = None,
        *,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Record the time of this call."""
        now = time.perf_counter()
        first = self._first.setdefault(step, now)
        self.seconds[step] = now - first


class ArtifactHook:
    """Keeps the last non-``None`` artifact of each step in ``artifacts`` (``step → object``)."""

    def __init__(self) -> None:
        self.artifacts: dict[str, Any] = {}

    def __call__(
        self,
        step: str,
        artifact: Any = None,
        *,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Keep ``artifact``."""
        if artifact is not None:
            self.artifacts[step] = artifact


class ProgressHook:
    """Progress of every step: rich bars on a terminal, plain lines elsewhere.

    Use it as a context manager. When ``stream`` is not a terminal, a line such as
    ``features minilm: 1200/5000 (24%), 35 s`` is printed when a step starts, at most every
    ``every`` seconds while it runs, and when it completes — so a log shows that long work is
    alive.

    Args:
        stream: Where to draw (default ``sys.stderr``).
        every: Seconds between plain lines.
        transient: Remove finished rich bars.
    """

    def __init__(self, stream: IO[str] | None = None, every: float = 30.0, transient: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.transient = transient
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._plain: dict[str, tuple[float, float]] = {}  # step → (started, last printed)

    def __enter__(self) -> ProgressHook:
        if self.terminal:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=self.transient,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def __call__(
        self,
        step: str,
        artifact: Any = None,
        *,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Advance (or start) the bar or line of ``step``."""
        if completed is None and total is None:
            return
        if self._progress is not None:
            task = self._tasks.get(step)
            if task is None:
                task = self._tasks[step] = self._progress.add_task(step, total=total)
            self._progress.update(task, total=total, completed=completed or 0)
            return
        now = time.monotonic()
        started, last = self._plain.get(step, (now, -float("inf")))
        done = completed is not None and total is not None and completed >= total
        if step in self._plain and not done and now - last < self.every:
            return
        self._plain[step] = (started, now)
        count = f"{completed or 0}" + (f"/{total}" if total is not None else "")
        share = f" ({100 * (completed or 0) / total:.0f}%)" if total else ""
        eta = ""
        if total and completed and not done and now > started:
            eta = f", ~{(now - started) * (total - completed) / completed:.0f} s left"
        print(f"{step}: {count}{share}, {now - started:.0f} s{eta}", file=self.stream, flush=True)


__all__ = ["ArtifactHook", "Hook", "Hooks", "ProgressHook", "TimingHook", "call_hook"]

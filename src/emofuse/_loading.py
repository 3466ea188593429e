"""Load libraries and model weights without the cyclic garbage collector walking them.

Importing torch, transformers, MediaPipe or openSMILE and building their models creates
millions of long-lived objects. CPython's collector runs a full collection each time the heap
has grown by a quarter, and again at interpreter exit, and each walks every object: seconds of
CPU over a short ``emofuse analyze`` run that find (almost) no garbage. Inside :func:`loading`
automatic collection is paused, and when the last concurrent load ends everything alive is
moved to the collector's permanent generation (:func:`gc.freeze`), which later collections
(and the one at exit) skip.

The cost: cyclic garbage made while something loads, in any thread, is not freed. Loads happen
once per process and extractor, so this is bounded; but the collector is process-wide state, so
only the process's owner may switch this on: the ``emofuse`` command does (:func:`own_process`),
importing emofuse as a library leaves the collector alone (:func:`loading` is then a no-op).
A program embedding emofuse can call :func:`own_process` itself, or :func:`gc.freeze` after its
own loads.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_active = 0
_was_enabled = False
_owned = False


def own_process() -> None:
    """Let :func:`loading` manage the garbage collector: for programs that own their process."""
    global _owned
    _owned = True


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Pause automatic garbage collection for the block, then freeze what is alive.

    Nests and may run in several threads at once: collection resumes (if it was enabled
    before the first one began) when the last one ends. Does nothing unless
    :func:`own_process` was called.
    """
    global _active, _was_enabled
    if not _owned:
        yield
        return
    with _lock:
        if _active == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.freeze()
                if _was_enabled:
                    gc.enable()

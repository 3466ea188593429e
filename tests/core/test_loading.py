"""Loading without the cyclic garbage collector (emofuse._loading)."""

from __future__ import annotations

import gc
import threading

import pytest

from emofuse import _loading
from emofuse._loading import loading


@pytest.fixture(autouse=True)
def owned(monkeypatch):
    """These tests act as the process's owner (the CLI); the library default is hands-off."""
    monkeypatch.setattr(_loading, "_owned", True)


def test_a_library_process_keeps_its_collector(monkeypatch):
    monkeypatch.setattr(_loading, "_owned", False)
    frozen = gc.get_freeze_count()
    with loading():
        assert gc.isenabled()
        kept = [object() for _ in range(10)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    del kept


def test_loading_pauses_collection_then_freezes_and_resumes():
    assert gc.isenabled()
    try:
        with loading():
            assert not gc.isenabled()
            with loading():  # nested: still paused when the inner one ends
                pass
            assert not gc.isenabled()
            kept = [object() for _ in range(10)]
            kept.append(kept)  # a cycle, alive
        assert gc.isenabled()
        assert gc.get_freeze_count() >= 11
        del kept
    finally:
        gc.unfreeze()  # give this test process its collector back as it was


def test_loading_keeps_a_disabled_collector_disabled():
    gc.disable()
    try:
        with loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_loading_in_two_threads_resumes_after_the_last():
    inside, release = threading.Event(), threading.Event()

    def load() -> None:
        with loading():
            inside.set()
            release.wait(10)

    try:
        thread = threading.Thread(target=load)
        thread.start()
        inside.wait(10)
        with loading():
            pass
        assert not gc.isenabled()  # the other thread is still loading
        release.set()
        thread.join(10)
        assert gc.isenabled()
    finally:
        release.set()
        gc.enable()
        gc.unfreeze()

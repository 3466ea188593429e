"""Shared fixtures. Real-data tests use ``shared_data`` and skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("EMOFUSE_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


SHARED = _shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$EMOFUSE_SHARED_DATA``); skips the test when absent."""
    if SHARED is None:
        pytest.skip(
            "real benchmark data not found: set EMOFUSE_SHARED_DATA or place shared/data beside the repo"
        )
    return SHARED


def shared_subdir(name: str) -> Path:
    """A dataset folder under the shared data, or skip naming what is missing."""
    if SHARED is None or not (SHARED / name).is_dir():
        pytest.skip(
            f"real data folder {name!r} not found under ../shared/data (or $EMOFUSE_SHARED_DATA)"
        )
    return SHARED / name


@pytest.fixture(autouse=True)
def _library_collector(monkeypatch):
    """Tests that call the CLI's ``main()`` in-process must not leave the collector managed
    (emofuse._loading.own_process) for the tests after them: each test starts as a library."""
    from emofuse import _loading

    monkeypatch.setattr(_loading, "_owned", False)

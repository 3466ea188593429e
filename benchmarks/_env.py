"""Where and from what a benchmark ran: git commit, machine, load. Shared by every benchmark."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


COPIED_STATE_ENV = "EMOFUSE_GIT_STATE"
"""Names a JSON file with :func:`git_state` as recorded where a .git-less copy of the tree was
made (``python benchmarks/_env.py > state.json``)."""

RESULTS_DIR = "benchmarks/results/"
"""What benchmarks write: not part of the code a result depends on."""


def git_state() -> dict[str, Any]:
    """Commit of the checkout and every file of the whole tree that differs from it.

    Tracked changes and untracked (not ignored) files anywhere count, except benchmark results
    themselves; call it once, before the run, so that what the run wrote does not count.
    """

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout
        except OSError:  # no git on this machine
            return ""

    if not git("rev-parse", "HEAD").strip() and os.environ.get(COPIED_STATE_ENV):
        # a copy of the tree without its .git (a machine with an accelerator): the state was
        # recorded, by this function, where the copy was made
        import json

        state = json.loads(Path(os.environ[COPIED_STATE_ENV]).read_text())
        return state | {"copied_to_another_machine": True}

    changed = sorted(
        line[3:].strip()
        for line in git("status", "--porcelain", "--untracked-files=all").splitlines()
        if line[3:].strip() and not line[3:].strip().startswith(RESULTS_DIR)
    )
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "dirty": bool(changed),
        "changed": changed,
    }


def require_clean(state: dict[str, Any], allow_dirty: bool) -> None:
    """Refuse to record a run whose code is not what its commit says, unless allowed."""
    if state["dirty"] and not allow_dirty:
        shown = ", ".join(state["changed"][:5]) + (" …" if len(state["changed"]) > 5 else "")
        raise SystemExit(
            f"uncommitted changes ({shown}): commit them first, so the result names the code "
            "that made it, or pass --allow-dirty (the result is then marked dirty, with the list)"
        )


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine(packages: Iterable[str] = (), threads: int | None = None) -> dict[str, Any]:
    """Platform, CPUs, RAM, torch threads and the versions of ``packages``."""
    import torch

    mem = _proc_field("/proc/meminfo", "MemTotal")
    versions = {}
    for dist in packages:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "ram_gb": round(int(mem.split()[0]) / 1024**2, 1) if mem else None,
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": versions,
    }


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews every number here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":  # the state to carry with a copy of the tree (COPIED_STATE_ENV)
    import json

    print(json.dumps(git_state(), indent=2))

"""Cost of identifying media inputs by content (the feature store's input signatures).

    python benchmarks/digest.py                      # every media file of the shared datasets
    python benchmarks/digest.py --only ravdess

For each dataset folder under the shared data it hashes every media file (audio, video,
image) with :func:`emofuse.features.base.file_digest` twice in one process: the first pass
reads every byte (what a new process pays once per file version), the second hits the
in-process memo (what every later signature costs). Writes ``benchmarks/results/digest.json``
with the command, the tree's state, the machine and, per dataset, files, bytes, seconds and
MB/s. Datasets without media here (MELD ships its transcripts only) are listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _env import git_state, load_average, machine  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
MEDIA = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".mp4", ".mkv", ".avi", ".mov",
         ".webm", ".jpg", ".jpeg", ".png"}  # fmt: skip


def measure(folder: Path) -> dict[str, object]:
    from emofuse.features import base

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA)
    size = sum(p.stat().st_size for p in files)
    base._DIGESTS.clear()
    t0 = time.perf_counter()
    for p in files:
        base.file_digest(p)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in files:
        base.file_digest(p)
    again = time.perf_counter() - t0
    return {
        "files": len(files),
        "bytes": size,
        "first_pass_s": round(first, 4),
        "first_pass_mb_per_s": round(size / 1e6 / first, 1) if first > 0 else None,
        "memo_pass_s": round(again, 4),
        "memo_us_per_file": round(1e6 * again / len(files), 2) if files else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = os.environ.get("EMOFUSE_SHARED_DATA", REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/digest.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found at {args.data} (set EMOFUSE_SHARED_DATA)")
    result: dict[str, object] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git": git_state(),
        "machine": machine() | {"load_average": load_average()},
        "datasets": {},
    }
    for folder in sorted(p for p in args.data.iterdir() if p.is_dir()):
        if args.only and folder.name not in args.only:
            continue
        stats = measure(folder)
        if not stats["files"]:
            stats = {"files": 0, "note": "no media files here (transcripts or features only)"}
        result["datasets"][folder.name] = stats  # type: ignore[index]
        print(folder.name, json.dumps(stats), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

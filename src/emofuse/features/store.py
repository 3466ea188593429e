"""The feature store: fingerprinted, atomic, resumable, safe with concurrent writers.

Layout::

    <root>/<extractor>/<fingerprint>/
        config.json      what produced these arrays (extractor, config, dependency versions)
        index.jsonl      append-only; one row per finished utterance: id, input signature,
                         shard (or the error that made it fail)
        shards/*.safetensors
        .lock            serialises index appends between processes (Ray workers)

A shard is written under a temporary name and renamed into place, *then* its rows are appended
to the index in one write that ends with a ``{"commit": <batch>}`` line. Rows count only once
their batch's commit line is there: a job killed in the middle of an index write leaves no
half-recorded batch, so the whole batch is extracted again on resume — with the same batch
composition, hence the same arrays even for extractors whose output depends on what else is in
the batch (padding). A kill before the index write leaves an orphan shard that no row names;
:meth:`FeatureCache.tidy` removes orphans and temporary files older than an hour when the next
extraction starts. The newest row of an id wins, so re-extracting a changed source simply
appends. (Rows without a batch, written by earlier releases, count as they are.)

Several processes extracting the same utterances into one store share the work instead of each
doing all of it: before a batch is extracted, its **claim** — ``claims/<batch key>.claim``,
created with ``O_EXCL`` and holding the claimer's host, process id and time — is taken
(:meth:`FeatureCache.claim`). A process that finds a batch claimed does the others first, then
waits for the claimer to record it, and takes the batch over when the claim has lapsed: its
process is gone (same host) or it is older than ``CLAIM_LEASE_S``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from emofuse.errors import InputError
from emofuse.features.base import FeatureExtractor, Features
from emofuse.records import Utterance, dump_json, ordinary_mode, process_alive

_SEP = "::"
CLAIM_LEASE_S = 1800.0
"""A claim older than this (seconds) is taken over even when its process may live (another host)."""


@dataclass(frozen=True)
class IndexRow:
    """One row of ``index.jsonl``."""

    id: str
    sig: str
    shard: str | None = None
    error: str | None = None


class FeatureCache:
    """Cached features of one extractor configuration (one fingerprint folder).

    Example:
        >>> cache = FeatureStore("cache").cache(extractor)      # doctest: +SKIP
        >>> todo = cache.pending(utterances, extractor)         # doctest: +SKIP
        >>> cache.get("dia0_utt0")["pooled"].shape              # doctest: +SKIP
        (384,)
    """

    def __init__(self, directory: str | os.PathLike[str], describe: dict[str, Any] | None = None):
        self.dir = Path(directory)
        self.shards_dir = self.dir / "shards"
        self.index_path = self.dir / "index.jsonl"
        self._lock = FileLock(str(self.dir / ".lock"))
        self._index: dict[str, IndexRow] = {}
        self._index_pos = 0
        self._uncommitted: dict[str, list[IndexRow]] = {}  # batch → rows awaiting its commit
        self._named_shards: set[str] = set()
        self._open: dict[str, Any] = {}
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        if describe is not None and not (self.dir / "config.json").exists():
            with self._lock:
                if not (self.dir / "config.json").exists():
                    dump_json(self.dir / "config.json", describe)

    # -- reading the index ----------------------------------------------------------------
    def index(self) -> dict[str, IndexRow]:
        """Newest row per utterance id (re-reads only what was appended since last time)."""
        if not self.index_path.exists():
            return self._index
        with self.index_path.open("rb") as fh:
            fh.seek(self._index_pos)
            chunk = fh.read()
        if not chunk:
            return self._index
        end = chunk.rfind(b"\n") + 1  # a torn last line (killed writer) is left for later
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
                if "commit" in row:  # the batch is complete: its rows count now
                    for r in self._uncommitted.pop(row["commit"], []):
                        self._add(r)
                    continue
                parsed = IndexRow(row["id"], row["sig"], row.get("shard"), row.get("error"))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if "batch" in row:
                self._uncommitted.setdefault(row["batch"], []).append(parsed)
            else:  # written before batches were committed
                self._add(parsed)
        self._index_pos += end
        return self._index

    def _add(self, row: IndexRow) -> None:
        self._index[row.id] = row
        if row.shard:
            self._named_shards.add(row.shard)

    def tidy(self, min_age: float = 3600.0) -> list[Path]:
        """Remove what killed jobs left, and return the removed paths.

        That is temporary files and shards that no committed index row names, older than
        ``min_age`` seconds (a live writer renames and records a shard within moments).
        """
        import time

        removed: list[Path] = []
        with self._lock:
            named = set(self._named_shards)
            self.index()
            named |= self._named_shards
            now = time.time()
            for path in self.shards_dir.iterdir():
                orphan = path.name.endswith(".tmp") or (
                    path.suffix == ".safetensors" and path.name not in named
                )
                try:
                    old = now - path.stat().st_mtime > min_age
                except OSError:
                    continue
                if orphan and old:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    # -- claims: several processes share the work ---------------------------------------------
    @contextlib.contextmanager
    def claim(self, key: str, lease: float = CLAIM_LEASE_S) -> Iterator[bool]:
        """Claim the batch ``key`` for this process while the block runs.

        Yields ``True`` when this process holds the claim (the block should extract the batch;
        the claim is released at its end, also on error), ``False`` when another live process
        holds it. A lapsed claim (see the module docstring) is taken over.
        """
        path = self.dir / "claims" / f"{key}.claim"
        path.parent.mkdir(parents=True, exist_ok=True)
        held = self._take(path) or (self._lapsed(path, lease) and self._take_over(path))
        try:
            yield held
        finally:
            if held:
                path.unlink(missing_ok=True)

    def _take(self, path: Path) -> bool:
        import socket
        import time

        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, fh)
        return True

    def _take_over(self, path: Path) -> bool:
        """Move a lapsed claim aside (atomic: one taker wins), then take the batch."""
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.lapsed")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return self._take(path)
        aside.unlink(missing_ok=True)
        return self._take(path)

    @staticmethod
    def _lapsed(path: Path, lease: float) -> bool:
        import socket
        import time

        try:
            meta = json.loads(path.read_text(encoding="utf-8") or "{}")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written or just released: look again later
        if age > lease:
            return True
        if meta.get("host") == socket.gethostname() and isinstance(meta.get("pid"), int):
            return not process_alive(meta["pid"])
        return False

    def pending(
        self, utts: Iterable[Utterance], extractor: FeatureExtractor, *, retry_failed: bool = False
    ) -> list[Utterance]:
        """The utterances with no current entry: new, changed since extraction, or (optionally) failed."""
        index = self.index()
        todo = []
        for utt in utts:
            row = index.get(utt.id)
            if row is None or row.sig != extractor.signature(utt) or (retry_failed and row.error):
                todo.append(utt)
        return todo

    def errors(self) -> dict[str, str]:
        """``id → problem`` for every utterance whose newest row is a failure."""
        return {k: r.error for k, r in self.index().items() if r.error}

    def ids(self) -> list[str]:
        """Ids with features available."""
        return [k for k, r in self.index().items() if r.shard]

    def __contains__(self, utt_id: object) -> bool:
        row = self.index().get(utt_id)  # type: ignore[arg-type]
        return row is not None and row.shard is not None

    # -- reading arrays -------------------------------------------------------------------
    def get(self, utt_id: str) -> Features:
        """The arrays stored for ``utt_id``.

        Raises:
            KeyError: nothing is stored for it.
            InputError: its extraction failed (the message is the recorded problem).
        """
        row = self.index().get(utt_id)
        if row is None:
            raise KeyError(f"no features for {utt_id!r} in {self.dir}")
        if row.error:
            raise InputError(utt_id, row.error)
        from safetensors import safe_open

        opened = self._open.get(row.shard)  # type: ignore[arg-type]
        if opened is None:  # open a shard once and index its keys by utterance id
            path = self.shards_dir / row.shard  # type: ignore[operator]
            try:
                handle = safe_open(str(path), framework="numpy")
            except Exception as err:  # deleted or damaged after it was written
                problem = (
                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                )
                raise InputError(
                    path,
                    f"unreadable feature shard ({problem}); delete {self.dir} to extract these "
                    "features again",
                ) from None
            by_id: dict[str, list[str]] = {}
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                by_id.setdefault(key.rsplit(_SEP, 1)[0], []).append(key)
            opened = self._open[row.shard] = (handle, by_id)  # type: ignore[index]
        handle, by_id = opened
        return {k.rsplit(_SEP, 1)[1]: handle.get_tensor(k) for k in by_id.get(utt_id, [])}

    # -- writing --------------------------------------------------------------------------
    def write(self, results: list[tuple[Utterance, str, Features | InputError]]) -> None:
        """Store one batch: ``(utterance, input signature, features or error)`` triples.

        The shard is complete on disk before any index row names it.
        """
        from safetensors.numpy import save_file

        tensors: dict[str, np.ndarray] = {}
        rows: list[dict[str, Any]] = []
        shard = f"{uuid.uuid4().hex}.safetensors"
        batch = shard.removesuffix(".safetensors")
        for utt, sig, res in results:
            if isinstance(res, InputError):
                rows.append({"id": utt.id, "sig": sig, "error": res.about(utt.id), "batch": batch})
                continue
            for key, arr in res.items():
                tensors[f"{utt.id}{_SEP}{key}"] = np.ascontiguousarray(arr)
            rows.append({"id": utt.id, "sig": sig, "shard": shard, "batch": batch})
        rows.append({"commit": batch})
        if tensors:
            tmp = self.shards_dir / f".{shard}.tmp"
            try:
                save_file(tensors, str(tmp))
                ordinary_mode(tmp)  # safetensors writes 0600; a cache may be shared
                _fsync(tmp)
                os.replace(tmp, self.shards_dir / shard)
            except Exception as err:  # a full disk, a read-only or vanished folder
                tmp.unlink(missing_ok=True)
                raise _write_error(self.dir, err) from None
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        try:
            with self._lock, self.index_path.open("ab+") as fh:
                if fh.tell() > 0:  # a writer killed mid-line left a torn row: end it first
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        payload = b"\n" + payload
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:  # the shard is orphaned, harmless: no index row names it
            raise _write_error(self.dir, err) from None


def _write_error(folder: Path, err: BaseException) -> InputError:
    problem = (
        getattr(err, "strerror", None) or str(err).strip().splitlines()[0] or type(err).__name__
    )
    return InputError(
        folder,
        f"cannot write features ({problem}); what was stored before is intact: free space or "
        "fix the folder, then run the same command again to resume",
    )


CACHE_ENV = "EMOFUSE_CACHE"
"""Environment variable naming the default feature cache folder."""

DEFAULT_CACHE = Path("~/.cache/emofuse/features")
"""The feature cache folder when neither an argument nor ``$EMOFUSE_CACHE`` names one."""


def default_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The feature cache folder (the one place this is decided).

    ``cache`` if given, else ``$EMOFUSE_CACHE``, else ``~/.cache/emofuse/features``; ``~``
    is expanded.
    """
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


class FeatureStore:
    """A folder of :class:`FeatureCache` s, one per extractor name and fingerprint.

    Args:
        root: The cache folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(self.root, "the feature cache must be a folder, and this is a file")

    def cache(self, extractor: FeatureExtractor) -> FeatureCache:
        """The cache for this extractor's current configuration (created if needed)."""
        return FeatureCache(
            self.root / extractor.name / extractor.fingerprint(), extractor.describe()
        )

    def caches(self) -> list[Path]:
        """Every fingerprint folder present."""
        return sorted(p.parent for p in self.root.glob("*/*/config.json"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Run extractors over utterances into a :class:`~emofuse.features.store.FeatureStore`.

Two engines give the same arrays:

* ``local`` — batches in this process.
* ``ray`` — batches spread over Ray actors (a local cluster by default, or ``address`` for a
  running one); each actor builds its own extractor and writes its own shards, which the store
  makes safe.

Work already in the store (same extractor fingerprint, same input signature) is skipped, so a
killed job started again continues where it stopped.

**Batches are cut from the whole input list**, in its order, not from what is left to do: a
batch with anything pending is extracted again whole. An extractor whose arrays depend on the
other members of its batch (padding changes float sums in the last bits) therefore gives a
resumed job — whatever was killed, in whichever order Ray finished — exactly the arrays of an
uninterrupted one. Several processes given the same inputs share the batches through the
store's claims (:meth:`~emofuse.features.store.FeatureCache.claim`) instead of each doing all
of them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emofuse.errors import ConfigError, InputError, MissingDependencyError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, has_input
from emofuse.features.store import FeatureStore
from emofuse.hooks import Hook, call_hook
from emofuse.records import Utterance

Engine = Literal["local", "ray"]


@dataclass
class ExtractionReport:
    """What one extraction run did.

    Attributes:
        extractor: Registry name.
        fingerprint: The cache folder name (hash of extractor, config, versions).
        cache_dir: Where the arrays are.
        total: Utterances asked for.
        cached: Already present before this run.
        extracted: Extracted now.
        failed: ``id → problem`` for utterances skipped because their input is unusable
            (including failures recorded by earlier runs).
        seconds: Wall time of this run.
    """

    extractor: str
    fingerprint: str
    cache_dir: Path
    total: int
    cached: int = 0
    extracted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "extractor": self.extractor,
            "fingerprint": self.fingerprint,
            "cache_dir": str(self.cache_dir),
            "total": self.total,
            "cached": self.cached,
            "extracted": self.extracted,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }


def extract_features(
    utterances: Iterable[Utterance],
    extractor: FeatureExtractor,
    store: FeatureStore | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    engine: Engine = "local",
    address: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    hook: Hook | None = None,
) -> ExtractionReport:
    """Extract and store features for every utterance that has none yet.

    Args:
        utterances: What to extract; ids must be unique.
        extractor: A configured extractor.
        store: A :class:`FeatureStore` or its root folder.
        batch_size: Utterances per call of ``extract_batch`` and per shard; default: the
            extractor's ``batch_size`` (large for batched text encoders, small for media).
        engine: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``engine="ray"``); ``None`` starts a local cluster.
        workers: Ray actors to start; default: the cluster's CPUs.
        retry_failed: Also retry utterances whose earlier extraction failed.
        hook: Progress hook (:mod:`emofuse.hooks`), called as ``hook("features <name>",
            total=, completed=)`` after each batch and with the report when done.

    Returns:
        An :class:`ExtractionReport`; bad inputs are listed in ``failed``, never raised.
    """
    check_engine(engine, address, workers)
    if batch_size is None:
        batch_size = extractor.batch_size
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    utts = list(utterances)
    _check_unique(utts)
    utts = extractor.prepare(utts)
    cache = store.cache(extractor)
    cache.tidy()  # what killed jobs left behind
    started = time.perf_counter()
    todo = cache.pending(utts, extractor, retry_failed=retry_failed)
    report = ExtractionReport(
        extractor.name,
        extractor.fingerprint(),
        cache.dir,
        total=len(utts),
        cached=len(utts) - len(todo),
    )
    step = f"features {extractor.name}"
    done = report.cached

    def advance(n: int) -> None:
        nonlocal done
        done += n
        call_hook(hook, step, total=report.total, completed=done)

    advance(0)
    if todo:
        pending = {u.id for u in todo}
        batches = [b for b in _batches(utts, batch_size) if any(u.id in pending for u in b)]

        def counted(batch: list[Utterance]) -> None:  # progress counts what was pending
            advance(sum(u.id in pending for u in batch))

        def needed(batch: list[Utterance]) -> bool:  # not recorded (by another process) since
            return bool(cache.pending(batch, extractor, retry_failed=retry_failed))

        if engine == "local":
            _run_local(batches, extractor, cache, needed, counted)
        else:
            _run_ray(batches, extractor, cache, store.root, address, workers, needed, counted)
    wanted = {u.id for u in utts}
    errors = cache.errors()
    report.failed = {k: v for k, v in errors.items() if k in wanted}
    report.extracted = len(todo) - sum(1 for u in todo if u.id in report.failed)
    report.seconds = time.perf_counter() - started
    call_hook(hook, step, report, total=report.total, completed=report.total)
    return report


def default_extractors(utts: list[Utterance]) -> dict[str, list[Utterance]]:
    """Extractors to run (name → the utterances it gets) chosen from the inputs present.

    Text goes to ``minilm`` (English) or ``e5`` (``language`` zh); audio to ``egemaps`` and
    ``whisper-encoder``; video and images to ``face``.
    """
    plan: dict[str, list[Utterance]] = {}
    for u in utts:
        if has_input(u, "text"):
            name = "e5" if (u.language or "").lower().startswith("zh") else "minilm"
            plan.setdefault(name, []).append(u)
        if has_input(u, "audio"):
            plan.setdefault("egemaps", []).append(u)
            plan.setdefault("whisper-encoder", []).append(u)
        if has_input(u, "face"):
            plan.setdefault("face", []).append(u)
    order = ["minilm", "e5", "egemaps", "whisper-encoder", "face"]
    return {k: plan[k] for k in order if k in plan}


def _batches(items: list[Utterance], size: int) -> Iterator[list[Utterance]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _process(
    extractor: FeatureExtractor, batch: list[Utterance]
) -> list[tuple[Utterance, str, Features | InputError]]:
    results = extractor.extract_batch(batch)
    if len(results) != len(batch):
        raise RuntimeError(
            f"extractor {extractor.name!r} returned {len(results)} results for {len(batch)} inputs"
        )
    out = []
    for utt, res in zip(batch, results, strict=True):
        if not isinstance(res, InputError):
            res = extractor.validate(res)
        out.append((utt, extractor.signature(utt), res))
    return out


def _batch_key(batch: list[Utterance], extractor: FeatureExtractor) -> str:
    import hashlib

    ids = "\n".join(f"{u.id}\t{extractor.signature(u)}" for u in batch)
    return hashlib.sha1(ids.encode("utf-8")).hexdigest()[:24]


Check = Callable[[list[Utterance]], bool]
Done = Callable[[list[Utterance]], None]


def _run_local(batches, extractor, cache, needed: Check, done: Done) -> None:
    extractor.ensure_ready()
    waiting = []
    for batch in batches:
        with cache.claim(_batch_key(batch, extractor)) as mine:
            if not mine:  # another process is on it: do the rest first
                waiting.append(batch)
                continue
            if needed(batch):  # it may have been recorded meanwhile
                cache.write(_process(extractor, batch))
        done(batch)
    _finish_claimed(waiting, extractor, cache, needed, done)


def _finish_claimed(waiting, extractor, cache, needed: Check, done: Done) -> None:
    """Wait for batches other processes claimed; take over those whose claim lapses."""
    while waiting:
        still = []
        for batch in waiting:
            if not needed(batch):  # recorded by its claimer
                done(batch)
                continue
            with cache.claim(_batch_key(batch, extractor)) as mine:
                if mine:
                    cache.write(_process(extractor, batch))
                    done(batch)
                else:
                    still.append(batch)
        waiting = still
        if waiting:
            time.sleep(0.5)


def check_engine(engine: str, address: str | None, workers: int | None) -> None:
    """Refuse in one line engine options that do not fit together, before any work starts.

    ``address`` and ``workers`` are Ray's: with the local engine they would be ignored, so
    they are refused. ``workers`` must be at least 1, and a Ray ``address`` must answer
    (:func:`check_ray_address`).

    Raises:
        ConfigError: an unknown engine.
        InputError: the options named do not fit (the message names the option).
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown engine {engine!r}; choose 'local' or 'ray'")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}")
    if engine == "local":
        given = [name for name, v in (("--address", address), ("--workers", workers)) if v]
        if given:
            raise InputError(
                given[0], "is for the Ray engine; add --engine ray (the local engine runs here)"
            )
        return
    check_ray_address(address)


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Refuse in one line a Ray address that is not a Ray cluster (``ray.init`` would hang).

    ``None`` and ``"auto"`` (start or find a local cluster) are not checked. ``host:port`` (a
    cluster's GCS) and ``ray://host:port`` (Ray Client) must accept a TCP connection and then
    complete a gRPC (HTTP/2) handshake, as both Ray services speak gRPC: a web server or other
    service on that port is refused instead of hanging ``ray.init``.

    Raises:
        InputError: the address is malformed, nothing accepts a connection there, or what
            answers is not a gRPC service.
    """
    import socket

    if address is None or address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(address, "not a Ray address: expected host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(address, f"no Ray cluster answers there ({reason})") from None
    try:
        import grpc  # Ray's own dependency
    except ImportError:  # pragma: no cover - installed with ray
        return
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise InputError(
            address,
            "something answers there, but not Ray (no gRPC handshake in "
            f"{timeout:g} s); a cluster's address is host:6379 by default, Ray Client's "
            "ray://host:10001",
        ) from None
    finally:
        channel.close()


@contextlib.contextmanager
def ray_actor_pool(
    actor: type, args: tuple[Any, ...], address: str | None, workers: int | None, most: int
) -> Iterator[Any]:
    """A ``ray.util.ActorPool`` of ``actor(*args)`` (one CPU each), on a cluster for the block.

    Connects to ``address`` (checked first, see :func:`check_ray_address`) or starts a local
    cluster with ``workers`` CPUs when Ray is not running yet, and shuts down only what it
    started. The pool has ``workers`` actors (default: the cluster's CPUs), at most ``most``;
    they are killed on the way out.

    Raises:
        MissingDependencyError: Ray is not installed.
        InputError: nothing answers at ``address``.
    """
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("the ray engine", "ray", extra="ray") from None
    started_here = not ray.is_initialized()
    if started_here:
        check_ray_address(address)
        init: dict[str, Any] = {
            "address": address,
            "include_dashboard": False,
            "log_to_driver": False,
        }
        if address is None:
            init["num_cpus"] = workers or os.cpu_count() or 1
        ray.init(**init)
    actors: list[Any] = []
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1)(actor)
        actors = [remote.remote(*args) for _ in range(max(1, min(n, most)))]
        yield ray.util.ActorPool(actors)
    finally:
        for a in actors:
            ray.kill(a)
        if started_here:
            ray.shutdown()


def _run_ray(batches, extractor, cache, root, address, workers, needed: Check, done: Done) -> None:
    spec = (extractor.name, extractor.config.model_dump(mode="json"), str(root))
    with contextlib.ExitStack() as claims:
        mine, waiting = [], []
        for batch in batches:  # the driver claims what its actors will extract
            if not claims.enter_context(cache.claim(_batch_key(batch, extractor))):
                waiting.append(batch)
            elif needed(batch):
                mine.append(batch)
            else:  # recorded by another process since the plan was made
                done(batch)
        if mine:
            with ray_actor_pool(_RayWorker, spec, address, workers, len(mine)) as pool:
                payloads = [([u.model_dump(mode="json") for u in b], i) for i, b in enumerate(mine)]
                for i in pool.map_unordered(lambda a, p: a.run.remote(*p), payloads):
                    done(mine[i])
    if waiting:
        extractor.ensure_ready()
        _finish_claimed(waiting, extractor, cache, needed, done)


class _RayWorker:
    """A Ray actor holding one extractor and writing straight into the shared store."""

    def __init__(self, name: str, config: dict[str, Any], root: str) -> None:
        cls = EXTRACTORS.get(name)
        self.extractor = cls(cls.Config.model_validate(config))
        self.cache = FeatureStore(root).cache(self.extractor)
        self.extractor.ensure_ready()

    def run(self, payload: list[dict[str, Any]], position: int) -> int:
        batch = [Utterance.model_validate(p) for p in payload]
        self.cache.write(_process(self.extractor, batch))
        return position


def _check_unique(utts: list[Utterance]) -> None:
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise InputError(u.id, "utterance id appears twice in the input; ids must be unique")
        seen.add(u.id)

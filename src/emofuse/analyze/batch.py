"""Analyse many files into one output folder, locally or on a Ray cluster.

The output folder holds, per file, ``<name>.json`` (the :class:`Analysis`) and ``<name>.html``
(its report), and for the whole run ``analysis.csv`` (every segment of every file, with a
``file`` column) and ``index.json``. A file is recognised by its **content** and the model
(BLAKE2b of the bytes + the model folder's config checksum), not by its name: running again
skips files already analysed, also when renamed or moved, and analyses a changed file again.
A file that fails is reported with its one-line reason; the others are not affected.

The Ray engine runs one task per file on a local cluster (or ``address``); each worker loads
the model once. Results are identical to the local engine's: the same code analyses each file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from emofuse.analyze.result import Analysis, rows_csv
from emofuse.analyze.transcripts import is_transcript, transcript_beside
from emofuse.datasets.folder import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from emofuse.errors import EmofuseError, EmofuseWarning, InputError
from emofuse.hooks import Hook, call_hook
from emofuse.records import dump_json, make_folder, read_json, write_text_atomic

MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES | IMAGE_SUFFIXES


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes:
        analyses: ``file → Analysis`` of every file analysed now or before (reused).
        failed: ``file → reason`` of the files that could not be analysed.
        reused: Files whose earlier result was found by content and kept.
        names: ``file → name`` of its ``<name>.json`` / ``<name>.html`` in the output folder.
        out: The output folder.
    """

    analyses: dict[str, Analysis] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reused: int = 0
    names: dict[str, str] = field(default_factory=dict)
    out: Path | None = None


def expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files to analyse, each once.

    Files as given; folders searched recursively (sorted) for media files and for transcripts
    with no media beside them.

    Raises:
        InputError: a path does not exist, or a folder holds nothing to analyse.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = [
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and not f.name.startswith(".")
                and (
                    f.suffix.lower() in MEDIA_SUFFIXES
                    or (
                        is_transcript(f)
                        and not any(f.with_suffix(s).is_file() for s in MEDIA_SUFFIXES)
                    )
                )
            ]
            if not found:
                raise InputError(p, "holds no media or transcript files to analyse")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(p, "no such file or folder")
    unique: dict[str, Path] = {}
    for f in out:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values())


def model_key(model_dir: Path) -> str:
    """A short identity of a saved model: SHA-256 of its ``config.json`` (which pins every weight file)."""
    return hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()[:16]


def analyze_files(
    paths: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    engine: Literal["local", "ray"] = "local",
    address: str | None = None,
    workers: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    language: str = "en",
    report: bool = True,
    transcript: str | os.PathLike[str] | None = None,
    hook: Hook | None = None,
    on_result: Callable[[Path, Analysis | None, str | None], None] | None = None,
) -> BatchResult:
    """Analyse files and folders into ``out`` (see the module docstring).

    Args:
        paths: Files and folders.
        out: The output folder (created).
        model: A saved model folder (default: the bundled model).
        engine: ``"local"`` (in this process) or ``"ray"``.
        address: Ray cluster address (default: start a local one).
        workers: Ray workers (default: the cluster's CPUs).
        cache: Feature store to reuse and fill.
        language: Language spoken in the media (ASR only for English).
        report: Also write each file's HTML report.
        transcript: The transcript of the one media file given (default: one beside it).
        hook: Progress hook (step ``"analyze"`` counts files).
        on_result: Called per file with ``(path, analysis, error)`` as results arrive.

    Raises:
        InputError: a path does not exist or the model folder is unusable.
    """
    files = expand(paths)
    if transcript is not None:
        if len(files) != 1:
            raise InputError(transcript, "a transcript goes with exactly one media file")
        if not Path(transcript).is_file():
            raise InputError(transcript, "no such transcript file")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}")
    if engine == "ray":
        from emofuse.features.pipeline import check_ray_address

        check_ray_address(address)
    folder = make_folder(out)
    lock = FileLock(folder / ".emofuse-analyze.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(
            folder, "another emofuse analyze is writing here; wait for it or use another --out"
        ) from None
    try:
        return _analyze_into(
            files,
            folder,
            model,
            engine,
            address,
            workers,
            cache,
            language,
            report,
            transcript,
            hook,
            on_result,
        )
    finally:
        lock.release()


def _analyze_into(
    files: list[Path],
    folder: Path,
    model: str | os.PathLike[str] | None,
    engine: Literal["local", "ray"],
    address: str | None,
    workers: int | None,
    cache: str | os.PathLike[str] | None,
    language: str,
    report: bool,
    transcript: str | os.PathLike[str] | None,
    hook: Hook | None,
    on_result: Callable[[Path, Analysis | None, str | None], None] | None,
) -> BatchResult:
    """The body of :func:`analyze_files`, run while it holds the output folder's lock."""
    from emofuse.analyze.analyzer import Analyzer, default_model_dir
    from emofuse.features.base import file_digest

    model_dir = Path(model) if model is not None else default_model_dir()
    analyzer = Analyzer(
        model_dir, cache=cache, language=language, hook=None if engine == "ray" else hook
    )
    mkey = model_key(model_dir)
    index_file = folder / "index.json"
    index: dict[str, Any] = {}
    if index_file.is_file():
        try:
            index = read_json(index_file)
        except InputError as err:  # results stay; only the record of what was done is lost
            warnings.warn(
                f"{err}; starting a new index (files are analysed again)",
                EmofuseWarning,
                stacklevel=2,
            )
    index = index if isinstance(index, dict) else {}
    result = BatchResult(out=folder)
    names_taken = {
        v["name"]
        for v in index.values()
        if isinstance(v, dict) and "name" in v and (folder / f"{v['name']}.json").is_file()
    }
    todo: list[tuple[Path, str]] = []
    for f in files:
        try:
            # the words count too: a transcript given, or one beside the media
            words = transcript if transcript is not None else transcript_beside(f)
            tkey = "" if words is None or is_transcript(f) else f"-{file_digest(words)[:16]}"
            # everything that changes the result: content, words, model, language
            key = f"{file_digest(f)}-{mkey}{tkey}-{language.lower()}"
        except OSError as err:
            result.failed[os.fspath(f)] = f"{f}: cannot read ({err.strerror or err})"
            if on_result:
                on_result(f, None, result.failed[os.fspath(f)])
            continue
        done = index.get(key)
        if isinstance(done, dict) and (folder / f"{done['name']}.json").is_file():
            try:
                prior = Analysis.model_validate_json(
                    (folder / f"{done['name']}.json").read_text("utf-8")
                )
            except ValueError:
                prior = None
            if prior is not None:
                if report and not (folder / f"{done['name']}.html").is_file():
                    prior.report(folder / f"{done['name']}.html")
                here = os.fspath(f)  # the same content, perhaps under another name
                preds = [q.model_copy(update={"source": here}) for q in prior.predictions]
                result.analyses[here] = prior.model_copy(
                    update={"source": here, "predictions": preds}
                )
                result.names[here] = done["name"]
                result.reused += 1
                if on_result:
                    on_result(f, result.analyses[os.fspath(f)], None)
                continue
        todo.append((f, key))

    def keep(f: Path, key: str, analysis: Analysis | None, error: str | None) -> None:
        if analysis is None:
            result.failed[os.fspath(f)] = error or "failed"
        else:
            name = _free_name(f, key, names_taken)
            names_taken.add(name)
            write_text_atomic(folder / f"{name}.json", analysis.to_json() + "\n")
            if report:
                analysis.report(folder / f"{name}.html")
            index[key] = {"name": name, "source": os.fspath(f)}
            dump_json(index_file, index)
            result.analyses[os.fspath(f)] = analysis
            result.names[os.fspath(f)] = name
        if on_result:
            on_result(f, analysis, error)
        call_hook(
            hook,
            "analyze",
            total=len(todo),
            completed=len(result.analyses) + len(result.failed) - result.reused,
        )

    if engine == "local":
        for f, key in todo:
            try:
                analysis = analyzer.analyze(f, transcript)
            except Exception as err:  # one file's failure never costs the others their results
                keep(f, key, None, failure(f, err))
            else:
                keep(f, key, analysis, None)
    elif todo:
        _run_ray(todo, model_dir, cache, language, transcript, address, workers, keep)
    order = {os.fspath(f): i for i, f in enumerate(files)}
    result.analyses = dict(sorted(result.analyses.items(), key=lambda kv: order.get(kv[0], 0)))
    if result.analyses:  # a run where every file failed leaves the last table as it was
        write_text_atomic(folder / "analysis.csv", batch_csv(result.analyses))
    return result


def failure(path: Path, err: BaseException) -> str:
    """One line for a file that could not be analysed (an unexpected error says so)."""
    if isinstance(err, EmofuseError):
        return str(err)
    first = (str(err).splitlines() or [""])[0][:200]
    return f"{path}: unexpected error ({type(err).__name__}{': ' + first if first else ''})"


def batch_csv(analyses: dict[str, Analysis]) -> str:
    """One CSV for many files: every segment, with the ``file`` it came from."""
    preds = []
    extra: dict[int, dict[str, str]] = {}
    for source, a in analyses.items():
        for p in a.predictions:
            extra[len(preds)] = {"file": source}
            preds.append(p)
    return rows_csv(preds, extra)


def _free_name(f: Path, key: str, taken: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in f.stem) or "file"
    return stem if stem not in taken else f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _run_ray(
    todo: list[tuple[Path, str]],
    model_dir: Path,
    cache: str | os.PathLike[str] | None,
    language: str,
    transcript: str | os.PathLike[str] | None,
    address: str | None,
    workers: int | None,
    keep: Callable[[Path, str, Analysis | None, str | None], None],
) -> None:
    from emofuse.features.pipeline import ray_actor_pool

    words = None if transcript is None else os.fspath(transcript)

    args = (os.fspath(model_dir), None if cache is None else os.fspath(cache), language)
    by_path = {os.fspath(f): (f, key) for f, key in todo}
    with ray_actor_pool(_RayAnalyzer, args, address, workers, len(todo)) as pool:
        for path, payload, error in pool.map_unordered(
            lambda a, item: a.run.remote(os.fspath(item[0]), words), todo
        ):
            f, key = by_path[path]
            keep(f, key, None if payload is None else Analysis.model_validate_json(payload), error)


class _RayAnalyzer:
    """A Ray actor holding one :class:`Analyzer` (the model is loaded once per worker)."""

    def __init__(self, model_dir: str, cache: str | None, language: str) -> None:
        from emofuse.analyze.analyzer import Analyzer

        self.analyzer = Analyzer(model_dir, cache=cache, language=language)

    def run(self, path: str, transcript: str | None = None) -> tuple[str, str | None, str | None]:
        try:
            return path, self.analyzer.analyze(path, transcript).to_json(indent=None), None
        except Exception as err:  # reported per file, as the local engine does
            return path, None, failure(Path(path), err)


__all__ = ["BatchResult", "analyze_files", "batch_csv", "expand", "model_key"]

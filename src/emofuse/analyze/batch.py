"""Analyse many files into one output folder, locally or on a Ray cluster.

The output folder holds, per file, ``<name>.json`` (the :class:`Analysis`) and ``<name>.html``
(its report), and for the whole run ``analysis.csv`` (every segment of every file, with a
``file`` column) and ``index.json`` (:data:`INDEX_VERSION`). A result is recognised by what
decides it — the file's **content**, its transcript's, the model (the model folder's config
checksum) and the language — not by the file's name: running again skips files already
analysed, also when renamed, copied or moved (the copy gets its own JSON, report and ids),
and analyses a changed file again. Each file keeps its name across runs, so a changed file's
new result replaces its old one; two files with one stem are told apart by a hash of the
path (``clip``, ``clip-3f2a…``), and segment ids start with that name, so they never repeat
within a folder. A file that fails is reported with its one-line reason; the others are not
affected.

The Ray engine runs one task per file on a local cluster (or ``address``); each worker loads
the model once. Results are identical to the local engine's: the same code analyses each file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, Timeout

from emofuse.analyze.result import Analysis, rows_csv
from emofuse.analyze.transcripts import is_transcript, transcript_beside
from emofuse.datasets.folder import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from emofuse.errors import EmofuseError, EmofuseWarning, InputError
from emofuse.hooks import Hook, call_hook
from emofuse.records import dump_json, make_folder, read_json, write_text_atomic

if TYPE_CHECKING:
    from emofuse.analyze.analyzer import Analyzer

MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES | IMAGE_SUFFIXES


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes:
        analyses: ``file → Analysis`` of every file analysed now or before (reused).
        failed: ``file → reason`` of the files that could not be analysed.
        reused: Files whose earlier result was found by content and kept.
        ignored: ``file → why`` of the files in the folders given that were not analysed.
        names: ``file → name`` of its ``<name>.json`` / ``<name>.html`` in the output folder.
        out: The output folder.
    """

    analyses: dict[str, Analysis] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reused: int = 0
    ignored: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    out: Path | None = None


def expand(
    paths: Iterable[str | os.PathLike[str]], ignored: dict[str, str] | None = None
) -> list[Path]:
    """The files to analyse, each once, as absolute paths.

    Files as given; folders searched recursively (sorted) for media files and for transcripts
    with no media beside them. Absolute, so a file reached from another working directory (or
    by a relative and an absolute path) is the same file of the output folder's index.

    Args:
        paths: Files and folders.
        ignored: Filled with ``file → why`` for the files of the folders that are not analysed
            (not a media or transcript type; hidden files are passed over silently).

    Raises:
        InputError: a path does not exist, or a folder holds nothing to analyse.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(os.path.abspath(raw))
        if p.is_dir():
            found = []
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.suffix.lower() in MEDIA_SUFFIXES:
                    found.append(f)
                elif is_transcript(f):
                    if not any(f.with_suffix(s).is_file() for s in MEDIA_SUFFIXES):
                        found.append(f)
                elif ignored is not None:
                    kind = f.suffix.lower() or "no suffix"
                    ignored[os.fspath(f)] = f"not a media or transcript file type ({kind})"
            if not found:
                raise InputError(p, "holds no media or transcript files to analyse")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(raw, "no such file or folder")
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
    rationale: bool = False,
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
        rationale: Explanations written by the model's LLM head (see :class:`Analyzer`).
        hook: Progress hook (step ``"analyze"`` counts files).
        on_result: Called per file with ``(path, analysis, error)`` as results arrive.

    Raises:
        InputError: a path does not exist, the model folder is unusable, or the engine
            options do not fit (``address`` or ``workers`` without ``engine="ray"``, a Ray
            address that is not a Ray cluster).
        ConfigError: ``language`` is not a BCP-47 language tag, or ``rationale`` with a model
            that has no LLM head.
    """
    ignored: dict[str, str] = {}
    files = expand(paths, ignored)
    if transcript is not None:
        if len(files) != 1:
            raise InputError(transcript, "a transcript goes with exactly one media file")
        if not Path(transcript).is_file():
            raise InputError(transcript, "no such transcript file")
    from emofuse.analyze.analyzer import Analyzer, default_model_dir, language_tag
    from emofuse.features.pipeline import check_engine

    check_engine(engine, address, workers)
    language = language_tag(language)
    model_dir = Path(model) if model is not None else default_model_dir()
    # the model is loaded (and a folder that is no model refused) before the output folder
    # is touched
    analyzer = Analyzer(
        model_dir,
        cache=cache,
        language=language,
        rationale=rationale,
        hook=None if engine == "ray" else hook,
    )
    created = not Path(out).exists()
    folder = make_folder(out)
    lock = FileLock(folder / ".emofuse-analyze.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(
            folder, "another emofuse analyze is writing here; wait for it or use another --out"
        ) from None
    try:
        result = _analyze_into(
            files,
            folder,
            analyzer,
            model_dir,
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
        if created:  # a run that wrote nothing leaves no folder behind (only its lock was made)
            with contextlib.suppress(OSError):
                if [f.name for f in folder.iterdir()] == [".emofuse-analyze.lock"]:
                    (folder / ".emofuse-analyze.lock").unlink()
                    folder.rmdir()
    result.ignored = ignored
    return result


def _analyze_into(
    files: list[Path],
    folder: Path,
    analyzer: Analyzer,
    model_dir: Path,
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
    from emofuse.features.base import file_digest

    mkey = model_key(model_dir)
    index_file = folder / "index.json"
    raw: Any = {}
    if index_file.is_file():
        try:
            raw = read_json(index_file)
        except InputError as err:  # results stay; only the record of what was done is lost
            warnings.warn(
                f"{err}; starting a new index (files are analysed again)",
                EmofuseWarning,
                stacklevel=2,
            )
    index = _read_index(raw, folder)  # source path → {"key", "name"}, results that exist
    result = BatchResult(out=folder)
    owner = {e["name"]: src for src, e in index.items()}  # who each name belongs to
    by_key = {e["key"]: (src, e) for src, e in index.items()}
    todo: list[tuple[Path, str, str]] = []
    for f in files:
        here = os.fspath(f)
        try:
            # the words count too: a transcript given, or one beside the media
            words = transcript if transcript is not None else transcript_beside(f)
            tkey = "" if words is None or is_transcript(f) else f"-{file_digest(words)[:16]}"
            # everything that changes the result: content, words, model, language, rationales
            key = f"{file_digest(f)}-{mkey}{tkey}-{language.lower()}"
            key += "-rationale" if analyzer.rationale else ""
        except OSError as err:
            result.failed[here] = f"{f}: cannot read ({err.strerror or err})"
            if on_result:
                on_result(f, None, result.failed[here])
            continue
        # A file keeps its name across runs (a changed file or transcript replaces its old
        # result); a new file takes its stem, or the stem and a hash of its path when another
        # file has that name.
        name = index[here]["name"] if here in index else _free_name(f, owner)
        owner[name] = here
        prior = _prior(folder, by_key.get(key))
        if prior is None:
            todo.append((f, key, name))
            continue
        analysis = _renamed(prior, here, name)
        if index.get(here) != {"key": key, "name": name}:  # a copy, or moved: its own files
            write_text_atomic(folder / f"{name}.json", analysis.to_json() + "\n")
            index[here] = {"key": key, "name": name}
            _write_index(index_file, index)
        if report and not (folder / f"{name}.html").is_file():
            analysis.report(folder / f"{name}.html")
        result.analyses[here] = analysis
        result.names[here] = name
        result.reused += 1
        if on_result:
            on_result(f, analysis, None)

    def keep(f: Path, key: str, name: str, analysis: Analysis | None, error: str | None) -> None:
        if analysis is None:
            result.failed[os.fspath(f)] = error or "failed"
        else:
            write_text_atomic(folder / f"{name}.json", analysis.to_json() + "\n")
            if report:
                analysis.report(folder / f"{name}.html")
            index[os.fspath(f)] = {"key": key, "name": name}
            _write_index(index_file, index)
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
        for f, key, name in todo:
            try:
                analysis = analyzer.analyze(f, transcript, name=name)
            except Exception as err:  # one file's failure never costs the others their results
                keep(f, key, name, None, failure(f, err))
            else:
                keep(f, key, name, analysis, None)
    elif todo:
        _run_ray(
            todo, model_dir, cache, language, analyzer.rationale, transcript, address, workers, keep
        )
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


INDEX_VERSION = 2
"""``index.json``: ``{"version": 2, "files": {source path: {"key", "name"}}}``; version 1 (a
flat ``key → {"name", "source"}``) is read and rewritten."""


def _read_index(raw: Any, folder: Path) -> dict[str, dict[str, str]]:
    """``source path → {"key", "name"}`` of the results in ``folder`` that still exist."""
    if isinstance(raw, dict) and raw.get("version") == INDEX_VERSION:
        rows = raw.get("files")
        entries = rows if isinstance(rows, dict) else {}
    elif isinstance(raw, dict):  # version 1
        entries = {
            v["source"]: {"key": k, "name": v["name"]}
            for k, v in raw.items()
            if isinstance(v, dict) and isinstance(v.get("source"), str)
        }
    else:
        entries = {}
    return {
        src: {"key": str(e["key"]), "name": str(e["name"])}
        for src, e in entries.items()
        if isinstance(e, dict)
        and isinstance(e.get("key"), str)
        and isinstance(e.get("name"), str)
        and (folder / f"{e['name']}.json").is_file()
    }


def _write_index(index_file: Path, index: dict[str, dict[str, str]]) -> None:
    dump_json(index_file, {"version": INDEX_VERSION, "files": index})


def _free_name(f: Path, owner: dict[str, str]) -> str:
    """``f``'s stem, or with a hash of its path when another file has that name."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in f.stem) or "file"
    if owner.get(stem, os.fspath(f)) == os.fspath(f):
        return stem
    return f"{stem}-{hashlib.sha256(os.fspath(f).encode()).hexdigest()[:10]}"


def _prior(folder: Path, entry: tuple[str, dict[str, str]] | None) -> Analysis | None:
    """The earlier analysis an index entry names, if its JSON still reads."""
    if entry is None:
        return None
    try:
        return Analysis.model_validate_json(
            (folder / f"{entry[1]['name']}.json").read_text("utf-8")
        )
    except (OSError, ValueError):
        return None


def _renamed(a: Analysis, source: str, name: str) -> Analysis:
    """``a`` as the analysis of ``source`` under ``name``: same content, that file's ids.

    Segment ids and the dialogue id start with the name of the file they were made for
    (``<name>_seg000``); a copy analysed before under another name gets ids of its own.
    """
    first = a.predictions[0] if a.predictions else None
    old = (first.dialogue_id or first.id) if first is not None else None

    def rid(value: str | None) -> str | None:
        if value is None or old is None or not value.startswith(old):
            return value
        return name + value[len(old) :]

    preds = [
        q.model_copy(update={"source": source, "id": rid(q.id), "dialogue_id": rid(q.dialogue_id)})
        for q in a.predictions
    ]
    skipped = [s.model_copy(update={"id": rid(s.id)}) for s in a.skipped]
    return a.model_copy(update={"source": source, "predictions": preds, "skipped": skipped})


def _run_ray(
    todo: list[tuple[Path, str, str]],
    model_dir: Path,
    cache: str | os.PathLike[str] | None,
    language: str,
    rationale: bool,
    transcript: str | os.PathLike[str] | None,
    address: str | None,
    workers: int | None,
    keep: Callable[[Path, str, str, Analysis | None, str | None], None],
) -> None:
    from emofuse.features.pipeline import ray_actor_pool

    words = None if transcript is None else os.fspath(transcript)

    args = (os.fspath(model_dir), None if cache is None else os.fspath(cache), language, rationale)
    by_path = {os.fspath(f): (f, key, name) for f, key, name in todo}
    with ray_actor_pool(_RayAnalyzer, args, address, workers, len(todo)) as pool:
        for path, payload, error in pool.map_unordered(
            lambda a, item: a.run.remote(os.fspath(item[0]), words, item[2]), todo
        ):
            f, key, name = by_path[path]
            analysis = None if payload is None else Analysis.model_validate_json(payload)
            keep(f, key, name, analysis, error)


class _RayAnalyzer:
    """A Ray actor holding one :class:`Analyzer` (the model is loaded once per worker)."""

    def __init__(self, model_dir: str, cache: str | None, language: str, rationale: bool) -> None:
        from emofuse.analyze.analyzer import Analyzer

        self.analyzer = Analyzer(model_dir, cache=cache, language=language, rationale=rationale)

    def run(
        self, path: str, transcript: str | None = None, name: str | None = None
    ) -> tuple[str, str | None, str | None]:
        try:
            analysis = self.analyzer.analyze(path, transcript, name=name)
            return path, analysis.to_json(indent=None), None
        except Exception as err:  # reported per file, as the local engine does
            return path, None, failure(Path(path), err)


__all__ = ["BatchResult", "analyze_files", "batch_csv", "expand", "model_key"]

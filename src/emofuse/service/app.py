"""The HTTP service: :func:`create_app` builds the FastAPI application.

Endpoints (JSON unless said; every error is ``{"error": "<one line>"}`` with a 4xx status, or
503 with ``Retry-After`` when the service is busy):

=========================================  ===================================================
``GET /``                                  the web page (upload a file or paste a dialogue)
``GET /healthz``                           the process answers (always 200)
``GET /readyz``                            200 once models and database are ready, else 503
``GET /v1/models``                         the models by name, their labels and inputs
``POST /v1/analyze/text``                  one utterance or a dialogue → ``TextAnalysis``
``POST /v1/analyze``                       a short clip (multipart ``file``) → ``Analysis``
``POST /v1/jobs``                          a clip (multipart) or dialogue (JSON) → job, 202
``GET /v1/jobs`` / ``GET /v1/jobs/{id}``   recent jobs / one job, with its result when done
``DELETE /v1/jobs/{id}``                   cancel a job (200), or delete an ended one (204)
``GET /v1/jobs/{id}/result.json|.csv``     the result of a finished job
``GET /v1/jobs/{id}/report.html``          its HTML report (the plots of ``emofuse analyze``)
``GET /docs`` / ``/redoc``                 the OpenAPI documentation (``/openapi.json``)
=========================================  ===================================================

Responses carry the one output schema, :class:`~emofuse.schema.Prediction` (inside
``TextAnalysis`` and :class:`~emofuse.analyze.result.Analysis`).
"""

import asyncio
import codecs
import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from emofuse._version import __version__
from emofuse.analyze.result import Analysis
from emofuse.errors import ConfigError, EmofuseError, InputError
from emofuse.records import EMPTY_TEXT, NOT_UTF8, Utterance, process_alive, text_problem
from emofuse.service.auth import key_accepted, presented_key
from emofuse.service.errors import ServiceError, busy, one_line
from emofuse.service.inference import (
    DATASET,
    MediaPool,
    ModelSlot,
    Stopped,
    TextAnalysis,
    TextBatcher,
    Token,
)
from emofuse.service.jobs import JobStore, QueueFull, instance_id, job_json, make_engine, migrate
from emofuse.service.limits import check_media, receive_upload, remove_tree, safe_name
from emofuse.service.runner import JobRunner
from emofuse.service.settings import ServiceSettings

log = logging.getLogger("emofuse.service")

STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_PATHS = ("/v1/analyze", "/v1/jobs")
PAGE_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "frame-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'"
)
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
_DOCS_STATIC = "/docs-assets"


# -- request and response models ---------------------------------------------------------------
class TextTurn(BaseModel):
    """One turn of a dialogue."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="What was said (non-empty).")
    speaker: str | None = Field(
        None, max_length=100, description="Who said it (kept for reading; models never need it)."
    )


class TextRequest(BaseModel):
    """One utterance (``text``) or a dialogue (``turns``), with the model to use.

    Exactly one of ``text`` and ``turns`` is given.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["text"]}, {"required": ["turns"]}],
            "examples": [
                {"text": "I can't believe you did that!"},
                {
                    "turns": [
                        {"speaker": "Ann", "text": "We won the match!"},
                        {"speaker": "Bob", "text": "No way, that's amazing."},
                    ]
                },
            ],
        },
    )

    text: str | None = Field(None, description="One utterance.")
    turns: list[TextTurn] | None = Field(None, description="A dialogue, its turns in order.")
    dialogue_id: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The dialogue's id (default 'dialogue'); turns are '<id>_turn000', …",
    )
    model: str | None = Field(None, max_length=64, description="A model name (GET /v1/models).")
    language: str | None = Field(None, max_length=35, description="BCP-47 language of the text.")

    @field_validator("turns")
    @classmethod
    def _some_turns(cls, v: list[TextTurn] | None) -> list[TextTurn] | None:
        if v is not None and not v:
            raise ValueError("a dialogue needs at least one turn")
        return v


class ModelInfo(BaseModel):
    """A model the service holds."""

    name: str
    ready: bool
    model: str | None = Field(None, description="Its registry name.")
    task: str | None = None
    inputs: list[str] = Field(default_factory=list, description="Modalities it reads.")
    labels: list[str] = Field(default_factory=list, description="Its emotion labels.")
    sentiment_range: tuple[float, float] | None = None
    error: str | None = Field(None, description="Why it could not be loaded, if so.")


class JobInfo(BaseModel):
    """A job: its state and progress, and the result once done."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    kind: Literal["media", "dialogue"]
    model: str
    language: str
    filename: str
    size: int = Field(description="Bytes uploaded.")
    duration: float | None = Field(None, description="Media length in seconds, if any.")
    created_at: float = Field(description="Seconds since the epoch (UTC).")
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = Field(description="0 … 1.")
    step: str | None = Field(None, description="What it is doing now.")
    attempts: int = Field(description="Times a worker started it.")
    error: str | None = Field(None, description="Why it failed (or 'cancelled').")
    cancel_requested: bool = False
    result: Analysis | None = Field(None, description="The analysis, once done.")
    links: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every answer that is not a success."""

    error: str = Field(description="One line naming the problem.")


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    version: str = __version__
    models: dict[str, str] | None = Field(None, description="Each model: ready, loading or failed.")
    database: str | None = None
    jobs: dict[str, int] | None = Field(None, description="Jobs by state.")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in (
        (400, "Bad request"),
        (401, "API key missing or not accepted"),
        (404, "No such thing"),
        (409, "The job has no result (yet)"),
        (413, "Too large or too long"),
        (415, "A Content-Type the endpoint does not take, or not a supported media container"),
        (422, "Malformed, undecodable or unusable input"),
        (503, "Busy or not ready: retry after Retry-After seconds"),
    )
}

_UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The media file."},
        "model": {"type": "string", "description": "A model name (default: the first)."},
        "language": {"type": "string", "description": "BCP-47 language spoken (default en)."},
    },
}


# -- the service object ------------------------------------------------------------------------
class Service:
    """Everything one running instance holds (settings, models, pools, database, jobs)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.owner = instance_id()
        self.slots = {name: ModelSlot(name, folder) for name, folder in settings.models.items()}
        self.temp = settings.temp_root / self.owner.replace(":", "-")
        self.store: JobStore | None = None
        self.pool: MediaPool | None = None
        self.runner: JobRunner | None = None
        self.batchers: dict[str, TextBatcher] = {}
        self.db_error: str | None = None

    def model_name(self, requested: str | None) -> str:
        """The model a request names (default the first), or a 404 listing the valid names."""
        name = requested or self.settings.default_model
        if name not in self.slots:
            raise ServiceError(404, f"no model {name!r}; the models are: {', '.join(self.slots)}")
        return name

    def check_temp(self) -> None:
        """Create this instance's temporary folder; remove those of dead instances of this host."""
        root = self.settings.temp_root
        root.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for sub in root.iterdir():
            parts = sub.name.split("-")
            if sub.is_dir() and sub.name.startswith(host + "-") and len(parts) >= 3:
                pid = parts[-2]
                if pid.isdigit() and (int(pid) == os.getpid() or not process_alive(int(pid))):
                    shutil.rmtree(sub, ignore_errors=True)
        self.temp.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        """Open the database, start the pools and the job runner, load models (background)."""
        import torch

        s = self.settings
        torch.set_num_threads(s.torch_threads)
        self.check_temp()
        engine = make_engine(s.db_url)
        await run_in_threadpool(migrate, engine)
        self.store = JobStore(engine, self.owner)
        self.pool = MediaPool(s.workers, s.queue, self.slots, s.cues)
        for name, slot in self.slots.items():
            batcher = TextBatcher(slot, s.text_batch, s.text_wait_ms / 1000, s.text_queue)
            batcher.start()
            self.batchers[name] = batcher
        self.runner = JobRunner(self.store, self.pool, self.temp, s)
        await run_in_threadpool(self.runner.start)

        def load_all() -> None:
            for slot in self.slots.values():
                slot.load()

        threading.Thread(target=load_all, name="load-models", daemon=True).start()

    async def stop(self) -> None:
        """Queue running jobs again, stop the pools, remove the temporary folder."""
        if self.runner is not None:
            await run_in_threadpool(self.runner.stop)
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.pool is not None:
            self.pool.shutdown()
        if self.store is not None:
            self.store.engine.dispose()
        shutil.rmtree(self.temp, ignore_errors=True)

    def request_folder(self) -> Path:
        """A fresh temporary folder for one request (the caller removes it)."""
        folder = self.temp / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder


# -- the app -------------------------------------------------------------------------------------
def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI application of the service.

    Args:
        settings: What to run with (default: :class:`ServiceSettings` from the environment).

    Returns:
        The app; its lifespan migrates the job database, starts the text batchers, the media
        pool and the job runner, and loads the models in the background (``/readyz`` says when
        they are ready).

    Raises:
        ConfigError: a model folder that does not exist or holds no saved model.
    """
    settings = settings or ServiceSettings()
    for name, folder in settings.models.items():
        if not Path(folder).is_dir():
            raise ConfigError(f"model {name!r}: {folder} is not a folder")
        if not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"model {name!r}: {folder} is not a saved model (no config.json)")
    service = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="emofuse",
        version=__version__,
        summary="Emotion and sentiment in speech, faces and words.",
        description="Analyse a sentence, a dialogue, a clip, or long media as a job. Every "
        'error is `{"error": "<one line>"}`.',
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    _errors(app)
    app.add_middleware(_Bodies, limit=settings.max_body_bytes, types=lambda: body_types(app))
    _pages(app)

    async def require_key(request: Request) -> None:
        key = presented_key(request.headers)
        if key is None:
            raise ServiceError(
                401, "an API key is needed: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
        if not key_accepted(key, settings.api_key_hashes):
            raise ServiceError(401, "the API key is not accepted")

    guards = []
    if settings.api_key_hashes:  # the schema shows the key only when one is needed
        key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
        bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
        guards = [Depends(key_header), Depends(bearer), Depends(require_key)]

    api = APIRouter(prefix="/v1", dependencies=guards, responses=ERRORS)

    # -- models ---------------------------------------------------------------------------------
    @api.get("/models", response_model=list[ModelInfo], tags=["models"])
    def models() -> list[dict[str, Any]]:
        """The models this service holds, by name (the first is the default)."""
        return [slot.info() for slot in service.slots.values()]

    # -- text -------------------------------------------------------------------------------------
    @api.post(
        "/analyze/text",
        response_model=TextAnalysis,
        response_model_exclude_none=True,
        tags=["analyze"],
    )
    async def analyze_text(body: TextRequest) -> Any:
        """Emotion and sentiment of one utterance, or of every turn of a dialogue.

        A dialogue's turns are one dialogue (ids ``<dialogue_id>_turn000`` …), so a
        conversational model reads each turn in its context. Turns that cannot be analysed are
        listed in ``skipped``; when none can, the answer is 422 naming the problem.
        """
        name = service.model_name(body.model)
        utts = _utterances(body, settings)
        # no words (empty, only tokenizer control tokens): left out with the reason every
        # front end gives (emofuse.records.text_problem), without a trip to the model
        unread = {u.id: p for u in utts if (p := text_problem(u.text or "")) is not None}
        if len(unread) == len(utts):
            first, problem = next(iter(unread.items()))
            raise ServiceError(
                422,
                f"the text cannot be analysed: {problem}"
                if body.text is not None
                else f"no turn could be analysed; {first}: {problem}",
            )
        todo = [u for u in utts if u.id not in unread]
        preds, skipped = await service.batchers[name].predict(todo, settings.request_timeout)
        skipped = {
            u.id: unread.get(u.id) or skipped[u.id] for u in utts if u.id in unread | skipped
        }
        return TextAnalysis(model=name, predictions=preds, skipped=skipped)

    # -- clips ------------------------------------------------------------------------------------
    @api.post(
        "/analyze",
        response_model=Analysis,
        response_model_exclude_none=True,
        tags=["analyze"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": _UPLOAD_FORM}},
            }
        },
    )
    async def analyze_clip(request: Request) -> Any:
        """Analyse a short clip (audio, video or image) now; longer media: ``POST /v1/jobs``.

        The file's kind is told by its content, not its name. Clips up to
        ``max_clip_seconds`` are answered here (413 beyond, pointing to the jobs).
        """
        folder = service.request_folder()
        handed_over = False
        try:
            upload = await receive_upload(
                request, folder, settings.max_upload_bytes, settings.request_timeout
            )
            name = service.model_name(upload.fields.get("model"))
            language = _check_language(upload.fields.get("language") or settings.language)
            path, _info = await run_in_threadpool(
                check_media,
                upload,
                settings.max_clip_seconds,
                ": send it to POST /v1/jobs, which answers at once and analyses it in the "
                "background",
            )
            assert service.pool is not None
            token = Token(deadline=time.monotonic() + settings.request_timeout)
            from emofuse.service.inference import progress_hook

            def work() -> Any:
                return service.pool.analyze(  # type: ignore[union-attr]
                    name,
                    path,
                    name=Path(upload.filename).stem or "upload",
                    filename=upload.filename,
                    language=language,
                    hook=progress_hook(token),
                )

            future = service.pool.submit(work)
            future.add_done_callback(lambda _f: remove_tree(folder))
            handed_over = True
            return await _await_analysis(request, future, token, settings.request_timeout)
        finally:
            if not handed_over:
                remove_tree(folder)

    # -- jobs -------------------------------------------------------------------------------------
    def links(job_id: str) -> dict[str, str]:
        base = f"/v1/jobs/{job_id}"
        return {
            "self": base,
            "result.json": f"{base}/result.json",
            "result.csv": f"{base}/result.csv",
            "report.html": f"{base}/report.html",
        }

    def job_body(view: Any, result: str | None = None) -> dict[str, Any]:
        return job_json(view, result) | {"links": links(view.id)}

    @api.post(
        "/jobs",
        status_code=202,
        response_model=JobInfo,
        response_model_exclude_none=True,
        tags=["jobs"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": _UPLOAD_FORM},
                    "application/json": {"schema": {"$ref": "#/components/schemas/TextRequest"}},
                },
            }
        },
    )
    async def create_job(request: Request) -> Any:
        """Queue a media file (multipart ``file``) or a dialogue (JSON ``turns``); answers at once.

        Poll ``GET /v1/jobs/{id}`` for the state, progress and then the result. A dialogue job
        gives the same report as a media file (plots, cues). 503 with ``Retry-After`` when
        ``queue`` jobs are already waiting.
        """
        folder = service.request_folder()
        try:
            ctype = request.headers.get("content-type", "")
            if ctype.split(";")[0].strip().lower() == "application/json":
                body = await _json_body(request, TextRequest)
                name = service.model_name(body.model)
                if body.turns is None:
                    raise ServiceError(422, "a job takes a dialogue: give 'turns', not 'text'")
                utts = _utterances(body, settings)
                for i, u in enumerate(utts):
                    # read as a transcript, where an empty turn is no turn: refused here, so
                    # that turn ids stay those of the request; a turn of only control tokens
                    # is kept, and left out by the analysis with the reason
                    problem = text_problem(u.text or "")
                    if problem in (EMPTY_TEXT, NOT_UTF8):
                        raise ServiceError(422, f"turns[{i}].text: {problem}")
                if all(text_problem(u.text or "") for u in utts):
                    raise ServiceError(
                        422, f"no turn could be analysed: {text_problem(utts[0].text or '')}"
                    )
                dialogue = body.dialogue_id or "dialogue"
                path = folder / f"{dialogue}.json"
                path.write_text(
                    json.dumps(
                        {"turns": [{"text": u.text, "speaker": u.speaker} for u in utts]},
                        ensure_ascii=False,
                    ),
                    encoding="utf-8",
                )
                kind, filename, suffix, duration = "dialogue", path.name, ".json", None
                language = body.language or settings.language
            else:
                upload = await receive_upload(
                    request, folder, settings.max_upload_bytes, settings.request_timeout
                )
                name = service.model_name(upload.fields.get("model"))
                language = upload.fields.get("language") or settings.language
                path, info = await run_in_threadpool(
                    check_media, upload, settings.max_media_seconds, ""
                )
                kind, filename, suffix = "media", upload.filename, path.suffix
                duration = info.duration
            _check_language(language)
            assert service.store is not None and service.runner is not None
            try:
                view = await run_in_threadpool(
                    service.store.create,
                    kind=kind,
                    model=name,
                    language=language,
                    filename=filename,
                    suffix=suffix,
                    media=path,
                    duration=duration,
                    max_queued=settings.queue,
                )
            except QueueFull:
                raise busy(f"{settings.queue} jobs queued", 30) from None
            service.runner.wake()
            return JSONResponse(
                job_body(view), status_code=202, headers={"Location": f"/v1/jobs/{view.id}"}
            )
        finally:
            remove_tree(folder)

    @api.get("/jobs", response_model=list[JobInfo], response_model_exclude_none=True, tags=["jobs"])
    def list_jobs(limit: int = 50) -> Any:
        """The newest jobs (without results), at most ``limit`` (1 … 500)."""
        if not 1 <= limit <= 500:
            raise ServiceError(422, "limit must be between 1 and 500")
        assert service.store is not None
        return [job_body(v) for v in service.store.list(limit)]

    def _job(job_id: str) -> Any:
        assert service.store is not None
        view = service.store.get(job_id) if len(job_id) <= 32 else None
        if view is None:
            raise ServiceError(404, f"no job {job_id[:40]!r}")
        return view

    @api.get(
        "/jobs/{job_id}", response_model=JobInfo, response_model_exclude_none=True, tags=["jobs"]
    )
    def get_job(job_id: str) -> Any:
        """The job's state and progress; with ``result`` (the ``Analysis``) once done."""
        view = _job(job_id)
        result = service.store.result(job_id, "result_json") if view.state == "done" else None  # type: ignore[union-attr]
        return job_body(view, result)

    @api.delete(
        "/jobs/{job_id}",
        response_model=JobInfo,
        response_model_exclude_none=True,
        tags=["jobs"],
        responses={204: {"description": "The ended job and its result were deleted."}},
    )
    def delete_job(job_id: str) -> Any:
        """Cancel a queued or running job (200, the job), or delete an ended one (204).

        A running job stops at its next progress report (on whichever instance runs it); its
        temporary files are removed.
        """
        view = _job(job_id)
        assert service.store is not None and service.runner is not None
        if view.state in ("queued", "running"):
            view = service.store.cancel(job_id)
            service.runner.cancel(job_id)
            return job_body(view)
        service.store.delete(job_id)
        return Response(status_code=204)

    def _finished(job_id: str, what: str) -> str:
        view = _job(job_id)
        if view.state != "done":
            raise ServiceError(
                409,
                f"job {job_id} is {view.state}"
                + (f": {view.error}" if view.error and view.state == "failed" else "")
                + ("; it has no result yet" if view.state in ("queued", "running") else ""),
            )
        text = service.store.result(job_id, what)  # type: ignore[union-attr]
        if text is None:
            raise ServiceError(404, f"job {job_id} has no result")
        return text

    @api.get("/jobs/{job_id}/result.json", response_model=Analysis, tags=["jobs"])
    def job_result_json(job_id: str) -> Any:
        """The finished job's ``Analysis`` as a download."""
        text = _finished(job_id, "result_json")
        view = _job(job_id)
        return Response(
            text,
            media_type="application/json",
            headers={"Content-Disposition": _attachment(view.filename, ".json")},
        )

    @api.get(
        "/jobs/{job_id}/result.csv",
        tags=["jobs"],
        response_class=Response,
        responses={
            200: {
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "description": "One row per segment.",
            }
        },
    )
    def job_result_csv(job_id: str) -> Any:
        """The finished job's segments as CSV (one row per prediction)."""
        text = _finished(job_id, "result_json")
        view = _job(job_id)
        csv = Analysis.model_validate_json(text).to_csv()
        return Response(
            csv,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": _attachment(view.filename, ".csv")},
        )

    @api.get(
        "/jobs/{job_id}/report.html",
        tags=["jobs"],
        response_class=Response,
        responses={
            200: {
                "content": {"text/html": {"schema": {"type": "string"}}},
                "description": "The HTML report.",
            }
        },
    )
    def job_report(job_id: str) -> Any:
        """The finished job's self-contained HTML report (inline SVG plots, no script)."""
        html = _finished(job_id, "report_html")
        return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})

    app.include_router(api)

    # -- health -----------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["health"])
    def healthz() -> Any:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    def readyz() -> Any:
        """Ready when every model is loaded and the database answers; 503 otherwise."""
        states = {
            n: (
                "ready"
                if s.model is not None
                else ("failed: " + (s.error or ""))
                if s.loaded.is_set()
                else "loading"
            )
            for n, s in service.slots.items()
        }
        db = "ok"
        counts: dict[str, int] = {}
        try:
            assert service.store is not None
            counts = service.store.counts()
        except Exception as e:
            db = one_line(f"unavailable: {type(e).__name__}")
        ready = db == "ok" and all(v == "ready" for v in states.values())
        body = Health(
            status="ready" if ready else "not ready", models=states, database=db, jobs=counts
        )
        if ready:
            return body
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "2"})

    return app


# -- helpers ---------------------------------------------------------------------------------------
def _utterances(body: TextRequest, settings: ServiceSettings) -> list[Utterance]:
    """The request's utterances, checked against the limits."""
    if (body.text is None) == (body.turns is None):
        raise ServiceError(422, "give either 'text' (one utterance) or 'turns' (a dialogue)")
    language = _check_language(body.language) if body.language else None
    if body.text is not None:
        _check_text(body.text, "text", settings.max_text_chars)
        return [Utterance(id="text", dataset=DATASET, text=body.text, language=language)]
    turns = body.turns or []
    if len(turns) > settings.max_turns:
        raise ServiceError(
            413, f"the dialogue has {len(turns)} turns, more than the {settings.max_turns} accepted"
        )
    dialogue = body.dialogue_id or "dialogue"
    utts = []
    for i, t in enumerate(turns):
        _check_text(t.text, f"turns[{i}].text", settings.max_text_chars)
        utts.append(
            Utterance(
                id=f"{dialogue}_turn{i:03d}",
                dataset=DATASET,
                dialogue_id=dialogue,
                turn=i,
                speaker=t.speaker,
                text=t.text,
                language=language,
            )
        )
    return utts


def _check_text(text: str, where: str, limit: int) -> None:
    if len(text) > limit:
        raise ServiceError(
            413, f"{where} has {len(text)} characters, more than the {limit} accepted"
        )
    if "\x00" in text:
        raise ServiceError(422, f"{where} holds a NUL character")


def _check_language(language: str) -> str:
    from emofuse.analyze.analyzer import language_tag

    try:
        return language_tag(language)
    except ConfigError as e:
        raise ServiceError(422, str(e)) from None


async def _json_body(request: Request, model: type[BaseModel]) -> Any:
    from pydantic import ValidationError

    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise body_problem(e) from None
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise ServiceError(422, _validation_line(e.errors())) from None


def body_problem(err: BaseException) -> ServiceError:
    """The 422 for a request body that cannot be decoded (the one place that words them).

    FastAPI answers a body its JSON decoder fails on other than by a syntax error (bytes that
    are not UTF-8, nesting deeper than Python's recursion limit) with a bare 400; the error
    handler and :func:`_json_body` both pass the cause here.
    """
    if isinstance(err, UnicodeDecodeError):
        return ServiceError(
            422,
            f"the body is not UTF-8 JSON (byte {err.start} cannot be decoded: {err.reason}); "
            "send UTF-8",
        )
    if isinstance(err, RecursionError):
        return ServiceError(422, "the JSON body is nested too deeply to be read")
    if isinstance(err, json.JSONDecodeError):
        return ServiceError(422, f"body: malformed JSON at character {err.pos}: {err.msg}")
    return ServiceError(422, f"the body cannot be decoded ({type(err).__name__})")


async def _await_analysis(request: Request, future: Any, token: Token, timeout: float) -> Any:
    """Wait for a media analysis; stop it when the client leaves or the deadline passes."""
    wrapped = asyncio.wrap_future(future)
    deadline = time.monotonic() + timeout + 1.0
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), 0.5)
        except TimeoutError:
            pass
        except Stopped as s:
            if s.reason == "timeout":
                raise busy(
                    f"the analysis took longer than {timeout:g} s; use POST /v1/jobs", 5
                ) from None
            if s.reason == "disconnected":
                raise ServiceError(
                    400, "the client disconnected; the analysis was stopped"
                ) from None
            raise busy(f"the analysis was stopped ({s.reason})", 5) from None
        if time.monotonic() > deadline:
            token.stop("timeout")
        elif await request.is_disconnected():
            token.stop("disconnected")


def _attachment(filename: str, suffix: str) -> str:
    stem = safe_name(Path(filename).stem, "result")
    return f'attachment; filename="{stem}{suffix}"'


def _validation_line(errors: list[Any]) -> str:
    """Pydantic/FastAPI validation errors as one line: where, and what is wrong."""
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",)) or "body"
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            at = [x for x in err.get("loc", ()) if isinstance(x, int)]
            where = f" at character {at[0]}" if at else ""
            msg = f"malformed JSON{where}{': ' + str(ctx) if ctx else ''}"
            loc = "body"
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return one_line("; ".join(parts) + more)


def _errors(app: FastAPI) -> None:
    """Every failure as ``{"error": "<one line>"}``."""

    def body(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def _service(_r: Request, e: ServiceError) -> JSONResponse:
        return body(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        return body(422, _validation_line(list(e.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        cause = e.__cause__
        if e.status_code == 400 and isinstance(cause, ValueError | RecursionError):
            problem = body_problem(cause)  # FastAPI's "error parsing the body": say which
            return body(problem.status, problem.message)
        return body(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(InputError)
    async def _input(_r: Request, e: InputError) -> JSONResponse:
        return body(422, e.problem if e.path and "/" in e.path else str(e))

    @app.exception_handler(EmofuseError)
    async def _emofuse(_r: Request, e: EmofuseError) -> JSONResponse:
        return body(400, str(e))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_r: Request, _e: ClientDisconnect) -> JSONResponse:
        return body(400, "the client disconnected before the request was complete")

    @app.exception_handler(Exception)
    async def _bug(_r: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return body(500, f"internal error ({type(e).__name__}); the service log has the details")


def body_types(app: FastAPI) -> list[tuple[Any, set[str], tuple[str, ...]]]:
    """Every operation that takes a body: ``(path regex, methods, the Content-Types it takes)``.

    Read from the app's OpenAPI schema (each operation's ``requestBody``), so every endpoint
    with a body is covered and the answer agrees with ``/openapi.json``.
    """
    from starlette.routing import compile_path

    out = []
    for path, operations in app.openapi().get("paths", {}).items():
        for method, op in operations.items():
            types = tuple(op.get("requestBody", {}).get("content", {}))
            if types:
                out.append((compile_path(path)[0], {method.upper()}, types))
    return out


def content_type_problem(
    method: str, path: str, header: str | None, accepted: tuple[str, ...]
) -> str | None:
    """Why a request's ``Content-Type`` is not one its route takes (``None``: it is one)."""
    from email.message import Message

    wanted = " or ".join(accepted)
    given = (header or "").split(";")[0].strip().lower()
    if not given:
        return f"{method} {path} takes Content-Type: {wanted} (none was sent)"
    if given not in accepted:
        return one_line(f"{method} {path} takes Content-Type: {wanted}, not {given[:60]}")
    message = Message()
    message["content-type"] = header or ""
    charset = message.get_param("charset")
    if given == "application/json" and charset is not None:
        name = str(charset).strip().lower()
        if name.replace("-", "") != "utf8":
            return one_line(f"{method} {path} takes UTF-8 JSON, not charset={name[:40]}")
    return None


class _Bodies:
    """Request bodies before any route reads them: their Content-Type, and a size cap.

    * A body sent with a Content-Type its route does not take (or none) gets 415 naming the
      types it takes (:func:`body_types`, read from the routes, so every endpoint with a body
      is covered), before the body is read.
    * Every body except the uploads' multipart (which are capped as they stream) is capped at
      ``limit`` bytes (413).
    """

    def __init__(self, app: Any, limit: int, types: Any) -> None:
        self.app = app
        self.limit = limit
        self._types_of = types
        self._types: list[tuple[Any, set[str], tuple[str, ...]]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._types is None:
            self._types = self._types_of()
        method, path = scope["method"], scope["path"]
        accepted = next((t for rx, ms, t in self._types if method in ms and rx.match(path)), None)
        if accepted is not None:
            problem = content_type_problem(method, path, headers.get("content-type"), accepted)
            if problem is not None:
                await JSONResponse({"error": problem}, status_code=415)(scope, receive, send)
                return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["path"] in UPLOAD_PATHS and ctype == "multipart/form-data":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse(
                {
                    "error": f"the request body ({int(length)} bytes) is larger than the {limit} bytes accepted"
                },
                status_code=413,
            )
            await response(scope, receive, send)
            return
        seen = 0
        # JSON is UTF-8 (RFC 8259): checked as it arrives, the same for every JSON endpoint
        utf8 = codecs.getincrementaldecoder("utf-8")() if ctype == "application/json" else None

        async def capped() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if utf8 is not None:
                    pending = len(utf8.getstate()[0])
                    try:
                        utf8.decode(chunk, final=not message.get("more_body", False))
                    except UnicodeDecodeError as e:
                        at = seen - pending + e.start
                        problem = body_problem(
                            UnicodeDecodeError("utf-8", b"", at, at + 1, e.reason)
                        )
                        raise HTTPException(problem.status, problem.message) from None
                seen += len(chunk)
                if seen > limit:
                    raise HTTPException(
                        413, f"the request body is larger than the {limit} bytes accepted"
                    )
            return message

        await self.app(scope, capped, send)


def _pages(app: FastAPI) -> None:
    """The web page, its assets, and the OpenAPI documentation (assets shipped, no CDN)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    try:
        docs_assets = Path(str(resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:  # the service extra is incomplete: docs as JSON only
        return
    app.mount(_DOCS_STATIC, StaticFiles(directory=docs_assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="emofuse — API",
            swagger_js_url=f"{_DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="emofuse — API",
            redoc_js_url=f"{_DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{_DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


__all__ = ["ModelInfo", "Service", "TextRequest", "TextTurn", "create_app"]

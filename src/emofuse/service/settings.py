"""Settings of the HTTP service: :class:`ServiceSettings`.

Every field can be given to :func:`~emofuse.service.app.create_app` directly, on the
``emofuse serve`` command line, or as an environment variable ``EMOFUSE_SERVICE_<FIELD>``
(``EMOFUSE_SERVICE_PORT=9000``, ``EMOFUSE_SERVICE_API_KEY_HASHES=hash1,hash2``,
``EMOFUSE_SERVICE_MODELS=default=/models/a,meld=/models/b``). Command-line values win.

The defaults are the safe ones: the service listens on 127.0.0.1 only, uploads are capped at
200 MiB, a synchronous clip at 60 s and a job's media at 3 h, and inference runs on a bounded
pool whose queue answers 503 with ``Retry-After`` when it is full.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emofuse.errors import ConfigError

ENV_PREFIX = "EMOFUSE_SERVICE_"
MiB = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/emofuse/service`` (``~/.local/state/emofuse/service``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "emofuse" / "service"


def parse_models(value: Any) -> dict[str, Path]:
    """``name=DIR`` pairs (a list, or one string joined by commas) as ``{name: Path(DIR)}``.

    Raises:
        ConfigError: a pair without ``=``, a name with characters other than letters, digits
            and ``_.-``, or a name given twice.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    else:
        parts = value.split(",") if isinstance(value, str) else list(value)
        items = []
        for part in parts:
            name, eq, folder = str(part).partition("=")
            if not eq or not name.strip() or not folder.strip():
                raise ConfigError(f"model {part!r}: give NAME=DIR (e.g. default=runs/meld/model)")
            items.append((name.strip(), folder.strip()))
    models: dict[str, Path] = {}
    for name, folder in items:
        if not _NAME.match(name):
            raise ConfigError(
                f"model name {name!r}: use letters, digits and _.- (at most 64 characters)"
            )
        if name in models:
            raise ConfigError(f"model name {name!r} given twice")
        models[name] = Path(folder).expanduser()
    return models


class ServiceSettings(BaseSettings):
    """What ``emofuse serve`` runs with (sizes in bytes, times in seconds).

    Raises:
        pydantic.ValidationError: a value of the wrong type or out of range (the message names
            the field).
        ConfigError: a malformed ``models`` entry or API key hash.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    models: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="Models by name (name=DIR); empty: the bundled default model as 'default'. "
        "The first is the one used when a request names none.",
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the SQLite job database and temporary files live.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job database (postgresql://user@host/db to share "
        "the queue between instances); default sqlite:///<state_dir>/jobs.db.",
    )
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SHA-256 hex digests of the accepted API keys (emofuse serve hash-key); "
        "empty: no key needed.",
    )
    temp_dir: Path | None = Field(
        None,
        description="Folder for uploads in flight (default <state_dir>/tmp); each instance "
        "works in a folder of its own below it and removes it when it stops.",
    )
    max_upload_bytes: int = Field(200 * MiB, ge=1, description="Largest upload accepted.")
    max_body_bytes: int = Field(
        2 * MiB, ge=1024, description="Largest JSON body accepted (text and dialogue requests)."
    )
    max_clip_seconds: float = Field(
        60.0, gt=0, description="Longest media POST /v1/analyze answers at once (longer: a job)."
    )
    max_media_seconds: float = Field(3 * 3600.0, gt=0, description="Longest media of a job.")
    max_turns: int = Field(1000, ge=1, description="Most turns in one dialogue.")
    max_text_chars: int = Field(5000, ge=1, description="Longest text of one utterance or turn.")
    workers: int = Field(1, ge=1, le=64, description="Threads analysing media (clips and jobs).")
    queue: int = Field(
        16,
        ge=0,
        description="Media analyses allowed to wait for a worker, and jobs allowed to be queued; "
        "beyond it: 503 with Retry-After.",
    )
    text_queue: int = Field(
        512, ge=1, description="Text requests allowed to wait for the model; beyond it: 503."
    )
    text_batch: int = Field(
        32, ge=1, description="Most utterances run through the model together (micro-batching)."
    )
    text_wait_ms: float = Field(
        3.0, ge=0, description="How long a text request waits for others to batch with."
    )
    request_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request may take (receiving an upload, waiting for and running "
        "its analysis); beyond it: 408 for a slow upload, 503 for a busy service.",
    )
    job_timeout: float = Field(6 * 3600.0, gt=0, description="Seconds one job may run.")
    lease_seconds: float = Field(
        30.0,
        ge=1,
        description="A running job whose worker has not reported for this long is taken back.",
    )
    max_attempts: int = Field(
        2, ge=1, description="Times a job is started before a worker that keeps dying fails it."
    )
    poll_seconds: float = Field(0.5, gt=0, description="How often idle workers look for jobs.")
    keep_jobs_hours: float = Field(
        7 * 24.0, gt=0, description="Finished jobs (and their results) are deleted after this."
    )
    torch_threads: int = Field(
        1, ge=1, description="Threads of each torch operation (1: requests run side by side)."
    )
    cues: bool = Field(True, description="Find and rank cues for media and dialogue jobs.")
    language: str = Field("en", description="Language of uploads unless a request says.")

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> dict[str, Path]:
        return parse_models(v)

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _hashes(cls, v: Any) -> list[str]:
        if v is None or v == "":
            return []
        items = v.split(",") if isinstance(v, str) else list(v)
        hashes = [str(h).strip().lower() for h in items if str(h).strip()]
        bad = [h for h in hashes if not _HASH.match(h)]
        if bad:
            raise ConfigError(
                f"API key hash {bad[0][:12]!r}…: give the 64-hex-digit SHA-256 of the key "
                "(emofuse serve hash-key), not the key itself"
            )
        return hashes

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.models:
            from emofuse.resources import default_model_dir

            self.models = {"default": default_model_dir()}
        return self

    @property
    def db_url(self) -> str:
        """The job database's SQLAlchemy URL, with the psycopg 3 driver for PostgreSQL."""
        url = self.database_url or f"sqlite:///{self.state_dir / 'jobs.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def temp_root(self) -> Path:
        """Uploads and work files in flight: one folder per running instance below it."""
        return self.temp_dir or self.state_dir / "tmp"

    @property
    def default_model(self) -> str:
        """The name of the model used when a request names none."""
        return next(iter(self.models))


__all__ = ["ServiceSettings", "default_state_dir", "parse_models"]

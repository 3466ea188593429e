"""The HTTP service (``emofuse serve``): analysis over HTTP, a web page, persistent jobs.

A front end like the CLI: it only calls the stages (:func:`emofuse.models.load_model`,
:class:`emofuse.analyze.Analyzer`) and answers with their one output schema,
:class:`~emofuse.schema.Prediction`. See ``docs/service.md``.

* :mod:`~emofuse.service.app` — :func:`create_app`, the routes and the error shape;
* :mod:`~emofuse.service.settings` — :class:`ServiceSettings` (flags and environment);
* :mod:`~emofuse.service.inference` — micro-batched text, the bounded media pool;
* :mod:`~emofuse.service.jobs` / :mod:`~emofuse.service.runner` — the job queue in SQLite or
  PostgreSQL (SQLAlchemy, Alembic migrations in ``migrations/``) and its workers;
* :mod:`~emofuse.service.limits` — upload streaming, caps and container sniffing;
* :mod:`~emofuse.service.auth` — API keys kept as SHA-256 hashes.

FastAPI, SQLAlchemy and uvicorn come with the ``service`` extra (``pip install
"emofuse[service]"``); nothing else in emofuse imports this package.
"""

from emofuse.service.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None):  # type: ignore[no-untyped-def]
    """The FastAPI app (see :func:`emofuse.service.app.create_app`)."""
    from emofuse.service.app import create_app as build

    return build(settings)


__all__ = ["ServiceSettings", "create_app"]

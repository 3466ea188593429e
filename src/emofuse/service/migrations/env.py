"""Alembic environment of the service's job database.

The service runs the migrations itself (:func:`emofuse.service.jobs.migrate`), handing over an
open connection in ``config.attributes["connection"]``. Run by hand, ``alembic -x url=URL``
names the database instead.
"""

from alembic import context
from sqlalchemy import create_engine

from emofuse.service.jobs import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///jobs.db upgrade head")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()

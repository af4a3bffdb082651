"""Alembic environment: runs the migrations on the connection that
:meth:`certmq.registry.database.Database.migrate` hands over in ``config.attributes["connection"]``.

To write a new revision after changing :mod:`certmq.registry.models`::

    python -m certmq.registry.migrations revision "what changed"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from certmq.registry.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the registry migrations run through certmq.registry.database.Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

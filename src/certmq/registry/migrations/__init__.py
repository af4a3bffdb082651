"""Alembic migrations of the registry schema; applied by :func:`certmq.registry.store.open_registry`."""

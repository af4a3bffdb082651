"""The management interfaces over HTTP: REST API v1, Prometheus metrics (docs/api.md).

:func:`create_app` builds the application of an instance, :class:`HttpListener` serves it inside
the running event loop, and :func:`serve_http` does both for ``certmq serve``.
"""

from certmq.api.application import create_app, serve_http
from certmq.api.http import HttpListener
from certmq.api.metrics import Metrics

__all__ = ["HttpListener", "Metrics", "create_app", "serve_http"]

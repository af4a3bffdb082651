"""The management API over HTTP: the ApsaraMQ-compatible RPC API, REST API v1 and Prometheus
metrics (docs/api.md).

:func:`certmq.api.application.create_api` builds the application that serves them;
:mod:`certmq.http_application` adds the console and serves both.
"""

"""What the API (:mod:`certmq.api`) and the console (:mod:`certmq.console`) share over HTTP: the
services each request handler may use (:mod:`~certmq.web.context`), the throttling of wrong
secrets, paging bounds, how a refused request is described, the security headers, the
instance's metrics and the listener that serves them (:mod:`~certmq.web.listener`).

Neither the API nor the console is imported here; :mod:`certmq.http_application` composes them.
"""

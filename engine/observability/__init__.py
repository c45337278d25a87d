"""Seeing the engine work: Prometheus metrics, health and readiness over an admin HTTP endpoint.

``settings`` is the ``admin:`` section; ``metrics`` the counters and histograms the running
engine feeds, and what is read from it and from the store at each scrape; ``admin`` the HTTP
endpoint (``/metrics``, ``/healthz``, ``/readyz``, ``/status``) served on the engine's own event
loop. The running engine (:mod:`engine.pipeline.server`) hands this part what it can see of
itself as an :class:`~engine.observability.metrics.EngineView`; nothing here reaches into it.
"""

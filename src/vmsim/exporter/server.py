"""The HTTP side: a registry holding the collector, served by ``prometheus_client``'s WSGI
server (one thread per scrape), or rendered once as text."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from vmsim.exporter.collector import VmaCollector


def make_registry(collector: VmaCollector) -> CollectorRegistry:
    """A registry of the collector alone (no Python runtime metrics of the exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(collector: VmaCollector) -> bytes:
    """The Prometheus text format of one collection (``vmsim exporter --once``)."""
    return generate_latest(make_registry(collector))


def serve(collector: VmaCollector, host: str, port: int) -> WSGIServer:
    """Serve /metrics on host:port (port 0: any free port; ``server_address`` says which) in
    a daemon thread; ``shutdown()`` and ``server_close()`` stop it."""
    server, _thread = start_http_server(port, addr=host, registry=make_registry(collector))
    return server


__all__ = ["make_registry", "render", "serve"]

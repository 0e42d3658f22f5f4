"""Prometheus metrics of one server (its own registry, so two apps in one process — tests —
do not share counters)."""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "telos_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "telos_request_latency_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("telos_requests_in_flight", "generation requests in flight", registry=r)
        self.samples = Gauge("telos_samples", "samples in the engine", ["state"], registry=r)
        self.tokens_generated = Counter("telos_tokens_generated", "completion tokens generated", registry=r)
        self.tokens_saved = Counter(
            "telos_tokens_saved_estimated", "tokens pruned samples did not generate (estimated)", registry=r
        )
        self.pruned = Counter("telos_samples_pruned", "samples pruned by steering", registry=r)
        self.rm_calls = Counter("telos_rm_calls", "reward-model calls by steered requests", registry=r)
        self.steered = Counter("telos_steered_requests", "steered requests by method", ["method"], registry=r)
        self.cancelled_total = Counter(
            "telos_requests_cancelled", "requests whose client went away", registry=r
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        known = route if route.startswith("/v1/") or route in ("/health", "/metrics") else "other"
        self.requests.labels(known, str(status)).inc()
        self.latency.labels(known).observe(seconds)

    def account(self, run, report: dict[str, Any] | None) -> None:
        self.tokens_generated.inc(run.tokens_generated)
        if report is not None:
            self.steered.labels(report["method"]).inc()
            self.tokens_saved.inc(report["tokens_saved_estimated"])
            self.pruned.inc(report["pruned"])
            self.rm_calls.inc(report["rm_calls"])

    def render(self, state) -> str:
        from prometheus_client import generate_latest

        self.queue_depth.set(state.inflight)
        for key, value in state.engine.load().items():
            self.samples.labels(key).set(value)
        return generate_latest(self.registry).decode()

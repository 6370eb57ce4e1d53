"""Fixtures of the telemetry tests: SDK providers with in-memory exporters, per test.

OpenTelemetry's global providers can be set once per process, so no test sets
them: each passes its own providers to ``Runtime.open``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..store_urls import store_url_for


@dataclass
class Otel:
    """An SDK set up for one test: what the runtime reported, read back."""

    meter_provider: MeterProvider
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter

    @property
    def providers(self) -> dict[str, Any]:
        return {"meter_provider": self.meter_provider, "tracer_provider": self.tracer_provider}

    def metrics(self) -> dict[str, Metric]:
        """Every metric collected now, by name."""
        data = self.reader.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "meerkat_runtime"
                for metric in scope.metrics:
                    out[metric.name] = metric
        return out

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Otel(meter_provider, reader, tracer_provider, exporter)
    meter_provider.shutdown()
    tracer_provider.shutdown()


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of each backend in turn (see ``store_url_for``)."""
    return store_url_for(request.param, request, tmp_path)

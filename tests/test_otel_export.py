"""Export never blocks the loop and never grows without bound: with an exporter that is stuck, the
program runs on and the batch processor's bounded queue drops what does not fit (the SDK reports
its drops itself: a warning, and from SDK 1.41 its own ``otel.sdk.processor.span.processed``
metric). taskwatch does not hook the processor to count them: that took private SDK attributes,
and on SDK 1.41-1.44 the hook's signature stopped span export altogether."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import taskwatch  # noqa: E402
import taskwatch.otel as tw_otel  # noqa: E402

from .conftest import run  # noqa: E402


class StuckExporter(SpanExporter):
    """Blocks in export() until released, like an endpoint that never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def export(self, spans):
        self.release.wait(60)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


async def churn(batches: int, size: int) -> float:
    async def trivial():
        return None

    started = time.perf_counter()
    for _ in range(batches):
        await asyncio.gather(*[asyncio.create_task(trivial()) for _ in range(size)])
    return time.perf_counter() - started


def test_a_stuck_exporter_never_blocks_the_loop(watch, loop_kind):
    exporter = StuckExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=64, max_export_batch_size=16,
                                   schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tw_otel.set_providers(provider)
    try:
        watch(otel=True, spans="all", watchdog=False)
        elapsed = run(churn(10, 300), loop_kind)  # 3,000 spans into a queue of 64
        stats = taskwatch.report()["stats"]
        exporter.release.set()
        assert provider.force_flush(10_000)
    finally:
        taskwatch.uninstall()
        tw_otel.set_providers(None, None)
        exporter.release.set()
        provider.shutdown()
    assert elapsed < 30  # it would never finish if the loop waited for the exporter
    made = stats["spans_exported"]
    assert made >= 3000
    assert "spans_dropped" not in stats  # the SDK's to report (see the top)
    # the queue kept memory bounded: at most the queue and a few batches in flight got out
    assert exporter.received <= 64 + 16 * 8


def test_the_programs_processors_are_left_as_they_are(watch):
    """taskwatch hands spans to the provider and touches none of its processors: after install
    and uninstall the program's batch processor is the very object, with the same attributes."""
    exporter = StuckExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=8, max_export_batch_size=8,
                                   schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    before = {k: v for k, v in vars(processor).items()}
    inner = getattr(processor, "_batch_processor", None)
    inner_before = dict(vars(inner)) if inner is not None else None
    tw_otel.set_providers(provider)
    try:
        watch(otel=True, spans="all", watchdog=False)

        async def main():
            await asyncio.gather(*[asyncio.create_task(asyncio.sleep(0)) for _ in range(20)])

        run(main())
        assert vars(processor).keys() == before.keys()
        assert all(vars(processor)[k] is v for k, v in before.items())
        if inner is not None:
            assert all(vars(inner)[k] is v for k, v in inner_before.items())
    finally:
        taskwatch.uninstall()
        tw_otel.set_providers(None, None)
        exporter.release.set()
        provider.shutdown()

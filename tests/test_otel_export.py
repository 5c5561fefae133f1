"""Export never blocks the loop and never grows without bound: with an exporter that is stuck, the
program runs on, the batch processor's queue drops what does not fit, and every dropped span is
counted in ``report()['stats']``."""

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
    dropped = stats["spans_dropped"]
    assert dropped >= made - 64 - 16 * 4  # at most the queue and a few batches in flight got out
    assert stats["dropped"] >= dropped
    # every span either reached the exporter or was counted as dropped: nothing vanished
    assert exporter.received + dropped >= made - 2  # the main task's span may end after the stats


def test_drops_of_the_programs_own_processor_are_counted(watch):
    """The count covers the batch processors of whatever provider taskwatch exports to."""
    exporter = StuckExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=8, max_export_batch_size=8,
                                   schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tw_otel.set_providers(provider)
    tracer = provider.get_tracer("app")
    try:
        watch(otel=True, spans="none", watchdog=False)

        async def main():
            for _ in range(100):
                tracer.start_span("own").end()

        run(main())
        assert taskwatch.report()["stats"]["spans_dropped"] >= 100 - 8 - 8
    finally:
        taskwatch.uninstall()
        tw_otel.set_providers(None, None)
        exporter.release.set()
        provider.shutdown()
    assert processor._batch_processor._metrics.__class__.__name__ != "_CountingMetrics"  # restored

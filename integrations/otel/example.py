"""A small traced service for looking at taskwatch's spans in Jaeger.

    docker compose -f integrations/otel/docker-compose.yml up -d     # Jaeger on :16686
    python -m taskwatch --otel integrations/otel/example.py           # OTLP to localhost:4318

Each "request" opens a SERVER span, as a web framework's instrumentation would, and spawns tasks:
one fails, one is cancelled by a timeout, one blocks the loop, one outlives the request.
"""

from __future__ import annotations

import asyncio
import random
import time

from opentelemetry import trace

tracer = trace.get_tracer("example.shop")


async def load_user(user_id: int) -> dict:
    with tracer.start_as_current_span("SELECT users"):
        await asyncio.sleep(0.01)
    return {"id": user_id}


async def charge_card(order_id: int) -> None:
    await asyncio.sleep(0.02)
    if order_id % 3 == 0:
        raise ConnectionError(f"payment gateway refused order {order_id}")


async def fetch_recommendations(user: dict) -> list:
    await asyncio.sleep(1.0)  # the slow dependency: cancelled by the request's timeout
    return []


def render_invoice(order_id: int) -> str:
    time.sleep(0.15)  # a synchronous PDF library: blocks the event loop
    return f"invoice-{order_id}.pdf"


async def email_invoice(order_id: int) -> None:
    invoice = render_invoice(order_id)
    await asyncio.sleep(0.05)  # still sending after the response went out
    with tracer.start_as_current_span("SMTP send", attributes={"invoice": invoice}):
        await asyncio.sleep(0.01)


async def handle_order(order_id: int) -> None:
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER,
                                      attributes={"order.id": order_id}):
        user = await asyncio.create_task(load_user(random.randint(1, 100)))
        try:
            async with asyncio.timeout(0.1):
                await asyncio.create_task(fetch_recommendations(user))
        except TimeoutError:
            pass
        try:
            await asyncio.create_task(charge_card(order_id))
        except ConnectionError:
            return
        background.add(asyncio.create_task(email_invoice(order_id)))


background: set[asyncio.Task] = set()


async def main() -> None:
    for order_id in (1, 2, 3):
        await handle_order(order_id)
    await asyncio.gather(*background)


if __name__ == "__main__":
    asyncio.run(main())

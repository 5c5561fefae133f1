"""Tests of the example app. The taskwatch marker below makes each test fail if it leaks tasks,
loses an exception or blocks the event loop (``pytest --taskwatch`` does that for a whole suite).

Uses pytest-asyncio and aiohttp's own TestServer/TestClient (what pytest-aiohttp's
``aiohttp_client`` fixture does, and that fixture works the same way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_app import make_app

# Every test here fails if it leaks tasks, loses an exception or blocks the loop.
pytestmark = [pytest.mark.asyncio, pytest.mark.taskwatch]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app())) as client:
        yield client


async def test_get_order(client: TestClient) -> None:
    response = await client.get("/orders/42")
    assert response.status == 200
    assert await response.json() == {"id": "42", "status": "new"}


async def test_report_endpoint(client: TestClient) -> None:
    response = await client.get("/debug/taskwatch")
    report = await response.json()
    assert report["stats"]["tasks_created"] > 0


async def test_tasks_endpoint_shows_the_worker(client: TestClient) -> None:
    response = await client.get("/debug/tasks")
    assert "audit_worker" in await response.text()

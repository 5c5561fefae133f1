"""Tests of the example app. The taskwatch marker below makes each test fail if it leaks tasks,
loses an exception or blocks the event loop (``pytest --taskwatch`` does that for a whole suite).

Two styles, both watched: async tests on anyio's pytest plugin with an httpx client talking to the
app in process, and Starlette's TestClient (which runs the app, lifespan included, on an event loop
in a thread).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.testclient import TestClient
from starlette_app import app

try:
    import httpx2 as httpx  # what Starlette 1.x's TestClient uses
except ModuleNotFoundError:  # older Starlette: httpx
    import httpx

# Every test here fails if it leaks tasks, loses an exception or blocks the loop.
pytestmark = pytest.mark.taskwatch


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):  # startup and shutdown, as a server runs them
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.anyio
async def test_get_order(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/42")
    assert response.status_code == 200
    assert response.json() == {"id": "42", "status": "new"}


@pytest.mark.anyio
async def test_report_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/debug/taskwatch")
    assert response.json()["stats"]["tasks_created"] > 0


def test_with_testclient() -> None:
    with TestClient(app) as client:
        assert client.get("/orders/7").json()["id"] == "7"
        assert "audit_worker" in client.get("/debug/tasks").text

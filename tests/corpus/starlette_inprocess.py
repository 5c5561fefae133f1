"""A Starlette app (HTTP, a streaming response, a WebSocket route, a middleware, a lifespan) served
by uvicorn in the same process as its clients: httpx for HTTP, a client that hangs up in the middle
of a stream, websockets for the WebSocket route; then a graceful shutdown by should_exit.

requires: starlette uvicorn httpx2 websockets
"""

import asyncio
import contextlib
import gc
import os
import ssl

# Imported at startup rather than on the event loop by the first request or connection.
import anyio._backends._asyncio  # noqa: F401
import httpcore2  # noqa: F401
import httpx2 as httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect

TLS = ssl.create_default_context()
LOG: list[str] = []


class Timing(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers["x-served-by"] = "corpus"
        return response


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.hits = 0
    yield
    LOG.append(f"lifespan: {app.state.hits} hits")


async def hello(request: Request) -> Response:
    request.app.state.hits += 1
    await asyncio.sleep(0.01)
    return JSONResponse({"hello": request.query_params.get("name", "world")})


async def ticks(request: Request) -> Response:
    count = int(request.query_params.get("count", "5"))

    async def generate():
        try:
            for n in range(count):
                yield f"tick {n}\n"
                await asyncio.sleep(0.02)
        finally:
            if n < count - 1:
                LOG.append("stream: client went away")

    return StreamingResponse(generate(), media_type="text/plain")


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text[::-1])
    except WebSocketDisconnect as disconnect:
        LOG.append(f"websocket: closed {disconnect.code}")


app = Starlette(
    routes=[Route("/hello", hello), Route("/ticks", ticks), WebSocketRoute("/chat", chat)],
    middleware=[Middleware(Timing)],
    lifespan=lifespan,
)


async def clients(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30, verify=TLS) as client:
        responses = await asyncio.gather(*(client.get("/hello", params={"name": n})
                                           for n in ("ada", "bob", "cy")))
        print([r.json()["hello"] for r in responses], responses[0].headers["x-served-by"])
        async with client.stream("GET", "/ticks", params={"count": "5"}) as response:
            print([line async for line in response.aiter_lines()])
        async with client.stream("GET", "/ticks", params={"count": "500"}) as response:
            async for line in response.aiter_lines():
                print("first of many:", line)
                break  # hang up in the middle of the stream
    async with connect(base.replace("http", "ws") + "/chat", open_timeout=20) as websocket:
        for word in ("level", "stressed", "drawer"):
            await websocket.send(word)
            print("websocket:", await websocket.recv())


async def main() -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    config.load()  # import the protocol implementations now, not on the event loop
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        await clients(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving
    for _ in range(500):  # the stream's generator has seen the hang-up
        if any(line.startswith("stream") for line in LOG):
            break
        # When the cancel reached the response between two chunks, the abandoned generator is
        # closed only once it is freed, and a reference cycle (the cancelled task's traceback)
        # may hold it until the collector runs: collect, so both runs print the same lines.
        gc.collect()
        await asyncio.sleep(0.01)
    print("\n".join(sorted(LOG)))


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())

"""A websockets echo and broadcast server on loopback with several concurrent clients, keepalive
pings on an idle connection, and a server that closes while a client is still connected.

requires: websockets
"""

import asyncio
import json
import os

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

CLIENTS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            request = json.loads(message)
            if request["type"] == "echo":
                await websocket.send(json.dumps({"type": "echo", "text": request["text"]}))
            elif request["type"] == "announce":
                broadcast(CLIENTS, json.dumps({"type": "announce", "text": request["text"]}))
    finally:
        CLIENTS.discard(websocket)


async def chat(uri: str, name: str, joined: asyncio.Barrier) -> list[str]:
    seen = []
    async with connect(uri, open_timeout=20, close_timeout=20) as websocket:
        for n in range(3):
            await websocket.send(json.dumps({"type": "echo", "text": f"{name}-{n}"}))
            seen.append(json.loads(await websocket.recv())["text"])
        await joined.wait()  # every client is connected before the announcement
        if name == "ada":
            await websocket.send(json.dumps({"type": "announce", "text": "lunch"}))
        async with asyncio.timeout(20):
            announcement = json.loads(await websocket.recv())
        seen.append(f"announce:{announcement['text']}")
    return seen


async def closed_by_server(uri: str) -> str:
    async with connect(uri) as websocket:
        await websocket.close(code=1000, reason="done")
        try:
            await websocket.recv()
        except ConnectionClosedOK as closed:
            return f"closed {closed.rcvd.code}"
    return "not closed"


async def idle_until_server_leaves(uri: str, server_closing: asyncio.Event) -> str:
    async with connect(uri, ping_interval=0.05, ping_timeout=20) as websocket:
        await websocket.send(json.dumps({"type": "echo", "text": "still there?"}))
        await websocket.recv()
        await asyncio.sleep(0.3)  # idle: only keepalive pings go back and forth
        server_closing.set()
        try:
            await websocket.recv()
        except ConnectionClosed as closed:
            return f"server went away: {closed.rcvd.code}"
    return "server stayed"


async def main() -> None:
    async with serve(handler, "127.0.0.1", 0, ping_interval=5) as server:
        port = server.sockets[0].getsockname()[1]
        uri = f"ws://127.0.0.1:{port}"
        joined = asyncio.Barrier(3)
        results = await asyncio.gather(*(chat(uri, name, joined) for name in ("ada", "bob", "cy")))
        for seen in results:
            print(" ".join(seen))
        print(await closed_by_server(uri))
    print("server closed")

    server = await serve(handler, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=20)
    uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server_closing = asyncio.Event()
    client = asyncio.create_task(idle_until_server_leaves(uri, server_closing))
    await server_closing.wait()
    server.close()  # closes the connection with 1001 (going away)
    await server.wait_closed()
    print(await client)


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())

"""A websockets chat client that starts a presence watcher and keeps no reference to it: nothing
else holds the watcher either, so the garbage collector destroys the pending task.

requires: websockets
"""

import asyncio
import gc
import json
import os

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve


async def handler(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(json.dumps({"echo": json.loads(message)["text"]}))


class Presence:
    """Who is online, updated whenever the server says someone joined."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.online: set[str] = set()

    async def watch(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            print("online:", sorted(self.online))


def start_presence() -> Presence:
    presence = Presence()
    asyncio.create_task(presence.watch())  # BUG: destroyed-pending
    return presence


async def chat(uri: str, name: str) -> list[str]:
    async with connect(uri, open_timeout=20, close_timeout=20) as websocket:
        replies = []
        for n in range(3):
            await websocket.send(json.dumps({"text": f"{name}-{n}"}))
            replies.append(json.loads(await websocket.recv())["echo"])
        return replies


async def main() -> None:
    async with serve(handler, "127.0.0.1", 0) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        start_presence()  # the returned object is dropped: nothing keeps it, or its task
        for replies in await asyncio.gather(chat(uri, "ada"), chat(uri, "bob")):
            print(" ".join(replies))
        gc.collect()  # the chat burst is over: free its buffers now
        await asyncio.sleep(0.05)
    print("server closed")


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())

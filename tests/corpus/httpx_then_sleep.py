"""One plain successful httpx request, then an ordinary sleep: the anyio cancel scopes inside
httpcore (connect and read timeouts) must leave the calling task as they found it.

requires: httpx2
"""

import asyncio
import os
import ssl

# httpx imports its transport (httpcore2, anyio's asyncio backend) on the first client and
# request: done at startup instead, not as a step of tens of milliseconds on the event loop
import anyio._backends._asyncio  # noqa: F401
import httpcore2  # noqa: F401
import httpx2 as httpx

# One TLS context for every client (building one per AsyncClient costs ~20 ms of CPU).
TLS = ssl.create_default_context()

BODY = b'{"status": "green"}'


async def status_endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # the request line and headers
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    server = await asyncio.start_server(status_endpoint, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        response = await httpx.AsyncClient(verify=TLS).get(f"http://127.0.0.1:{port}/status")
        print(response.status_code, response.json())
        await asyncio.sleep(1.5)
        print("slept")


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())

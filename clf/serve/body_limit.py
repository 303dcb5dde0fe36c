"""The request-body limit of `clf serve`, enforced in front of Ray Serve's HTTP server (its proxy, or with one local
replica the replica's own server) before any byte reaches the application.

Serve's proxy reads a request's body as fast as the client sends it into an unbounded queue, whatever the replica
does: a check in the replica alone bounds nothing there (a 600 MB chunked upload grew the proxy by 1.3 GB). This
ASGI middleware sits in front of the proxy and counts the body as it arrives, a declared Content-Length or chunks
alike, on every route: past the limit it answers 413 with the replica's JSON error shape and forwards nothing; the
rest of an oversized upload is read and dropped by uvicorn (memory stays flat, the connection stays usable).

Installed by Serve's documented proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, set by clf.serve.ray_app
in local mode; Serve applies it to a direct-ingress replica's server too; on a cluster, its proxy is the cluster's
and the replica's own check is what applies). Plain ASGI: no Ray and no starlette needed to run or test it.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Awaitable, Callable

from clf.serve.http_api import MAX_BODY_BYTES, body_too_large_message, error

CALLBACK_IMPORT_PATH = "clf.serve.body_limit:proxy_middlewares"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: HTTP requests whose body exceeds `max_bytes` are answered 413 here, never forwarded.

    A request within the limit reaches the app with its body messages replayed exactly as they arrived (so at
    most `max_bytes` of one request are held at once), then the client's own `receive` (disconnects).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, body_too_large_message(self.max_bytes, declared))
            return
        received: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-upload: nobody to answer
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                received.clear()  # drop what was held before answering
                await _refuse(send, body_too_large_message(self.max_bytes))
                return
            received.append(message)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(received, receive), send)


def proxy_middlewares() -> list[Any]:
    """Serve's proxy callback: the middlewares its HTTP proxy wraps around itself (starlette Middleware entries)."""
    from starlette.middleware import Middleware

    return [Middleware(BodyLimit)]


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps(error(message)).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed

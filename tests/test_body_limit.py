"""clf.serve.body_limit: the request-body limit in front of Serve's HTTP proxy, as plain ASGI (no Ray, no server).

The live server's chunked and declared-size uploads over 64 MB are checked in tests/test_serve_ray.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from clf.serve.body_limit import CALLBACK_IMPORT_PATH, BodyLimit, proxy_middlewares


class Recorder:
    """An app that records what it was called with and the body it read, and answers 200."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.calls.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _run(app, scope, messages):
    """Drive `app` with the client's messages; returns (messages the app sent, client messages it did not read)."""
    pending = list(messages)
    sent = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": "/predict", **scope}, receive, send))
    return sent, pending


def _answer(sent):
    start, body = sent
    return start["status"], json.loads(body["body"]), dict(start["headers"])


def _chunked(*parts: bytes):
    return [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]


def test_a_body_within_the_limit_reaches_the_app_whole():
    app = Recorder()
    sent, _ = _run(BodyLimit(app, max_bytes=6), {"headers": []}, _chunked(b"abc", b"def"))
    assert app.calls == [b"abcdef"]
    assert sent[0]["status"] == 200


def test_a_chunked_body_past_the_limit_is_413_and_never_forwarded():
    app = Recorder()
    endless = _chunked(*([b"x" * 4] * 1000))  # much more than the limit: reading stops at the limit
    sent, unread = _run(BodyLimit(app, max_bytes=10), {"headers": []}, endless)
    assert app.calls == []
    status, answer, headers = _answer(sent)
    assert (status, answer) == (413, {"error": "request body of more than 10 bytes; send smaller images"})
    assert headers[b"content-type"] == b"application/json"
    assert len(unread) == 1000 - 3  # 12 bytes > 10 after the third chunk


def test_a_declared_size_past_the_limit_is_413_before_reading():
    app = Recorder()
    sent, unread = _run(BodyLimit(app, max_bytes=10), {"headers": [(b"content-length", b"11")]}, _chunked(b"x" * 11))
    assert app.calls == [] and len(unread) == 1
    assert _answer(sent)[:2] == (413, {"error": "request body of 11 bytes, more than 10; send smaller images"})


@pytest.mark.parametrize("path", ["/health", "/ready", "/predict/batch", "/anything"])
def test_every_route_is_limited(path):
    app = Recorder()
    sent, _ = _run(BodyLimit(app, max_bytes=10), {"path": path, "headers": []}, _chunked(b"x" * 6, b"x" * 6))
    assert app.calls == [] and sent[0]["status"] == 413


def test_a_client_that_leaves_mid_upload_gets_nothing_and_the_app_is_not_called():
    app = Recorder()
    sent, _ = _run(BodyLimit(app, max_bytes=10), {"headers": []},
                   [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}])
    assert app.calls == [] and sent == []


def test_other_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(BodyLimit(app, max_bytes=1)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_serve_proxy_callback():
    pytest.importorskip("starlette")
    from starlette.middleware import Middleware

    module, _, name = CALLBACK_IMPORT_PATH.partition(":")
    assert (module, name) == ("clf.serve.body_limit", "proxy_middlewares")
    [middleware] = proxy_middlewares()
    assert isinstance(middleware, Middleware) and middleware.cls is BodyLimit

"""The Ray Serve replica of `clf serve`: HTTP requests in, the Predictor of `clf infer` on dynamic batches.

Imported only once Ray is known to be installed (clf.serve.ray_app checks the `serve` extra first), and by each
replica's worker process, which finds this class by name. Concurrent requests are gathered by ``@serve.batch``
into one ``Predictor.predict`` call (decode + the model's Preprocess + one session.run), run in a thread so the
replica's event loop keeps accepting requests and filling the next batch meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from clf.errors import ClfError
from clf.serve import http_api
from clf.serve.predictor import Predictor

logger = logging.getLogger(__name__)

# A per-image answer inside a batch: a row of logits, or (HTTP status, message) for an image that failed.
Answer = np.ndarray | tuple[int, str]


class ClfReplica:
    """One replica: a Predictor and the routes of http_api.

    Args:
        model_path: the .onnx file (readable on the replica's node).
        device: onnxruntime device, as for `clf infer`.
        threads: onnxruntime intra-op threads, also the decode threads of a batch.
        max_batch_size: images per dynamic batch (and per session.run).
        batch_wait_s: how long the first request of a batch waits for others.
        local: local mode: bind Serve's internal gRPC server to 127.0.0.1 (Ray binds it to [::]), and let the
            replica's own HTTP server (direct ingress) reuse its port as Serve's proxy does.
    """

    def __init__(self, model_path: str, device: str, threads: int, max_batch_size: int, batch_wait_s: float,
                 local: bool) -> None:
        if local:
            bind_internal_grpc_to_loopback()
            reuse_direct_ingress_port()
        self.predictor = Predictor(model_path, device=device, threads=threads, workers=threads,
                                   batch_size=max_batch_size)
        self.predict_images.set_max_batch_size(max_batch_size)
        self.predict_images.set_batch_wait_timeout_s(batch_wait_s)
        logger.info("%r ready", self.predictor)

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/") or "/"
        try:
            if path == http_api.HEALTH:
                return JSONResponse({"status": "ok"})
            if path == http_api.READY:
                return JSONResponse(self._ready())
            if path not in (http_api.PREDICT, http_api.PREDICT_BATCH):
                raise http_api.RequestError(
                    f"{path}: no such route; POST an image to {http_api.PREDICT} or images to "
                    f"{http_api.PREDICT_BATCH}, GET {http_api.HEALTH} or {http_api.READY}", 404)
            if request.method != "POST":
                raise http_api.RequestError(f"{path}: use POST, not {request.method}", 405)
            return await self._predict_route(request, batch=path == http_api.PREDICT_BATCH)
        except http_api.RequestError as exc:
            return JSONResponse(http_api.error(str(exc)), status_code=exc.status)

    def _ready(self) -> dict[str, Any]:
        return {"ready": True, "model": str(self.predictor.model_path), "provider": self.predictor.provider,
                "classes": self.predictor.classes}

    async def _predict_route(self, request: Request, batch: bool) -> JSONResponse:
        # Counted as it streams: a chunked body has no Content-Length to check first. (Local mode: clf.serve.body_limit
        # in front of Serve's HTTP server has refused it already; a cluster's proxy has no such middleware.)
        body = await http_api.read_body(request.stream(), request.headers.get("content-length"))
        content_type = request.headers.get("content-type")
        topk = http_api.parse_topk(request.query_params, len(self.predictor.classes))
        if not batch:
            answer = await self.predict_images(http_api.single_image(body, content_type))
            if isinstance(answer, tuple):
                return JSONResponse(http_api.error(answer[1]), status_code=answer[0])
            return JSONResponse(http_api.prediction(answer, self.predictor.classes, topk, self.predictor.task))
        images = http_api.batch_images(body, content_type)
        answers = await asyncio.gather(*(self.predict_images(image) for image in images))
        return JSONResponse([self._entry(answer, topk) for answer in answers])

    def _entry(self, answer: Answer, topk: int) -> dict[str, Any]:
        if isinstance(answer, tuple):
            return http_api.error(answer[1])
        return http_api.prediction(answer, self.predictor.classes, topk, self.predictor.task)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict_images(self, images: list[bytes]) -> list[Answer]:
        """One dynamic batch: each request's image -> its logits row, or (status, reason) when it failed."""
        return await asyncio.to_thread(self._predict_sync, images)

    def _predict_sync(self, images: list[bytes]) -> list[Answer]:
        try:
            result = self.predictor.predict(images)
        except ClfError as exc:  # a model that outputs NaN/inf: the whole batch fails, loudly, server-side
            logger.error("%s", exc)
            return [(500, str(exc))] * len(images)
        answers: list[Answer | None] = [None] * len(images)
        for row, index in enumerate(result.ok_indices):
            answers[int(index)] = result.logits[row]
        failed = iter(result.failures)  # in input order, like the indices missing from ok_indices
        for index, answer in enumerate(answers):
            if answer is None:
                _, reason = next(failed)
                answers[index] = (400, f"image: {reason}")
        return answers  # type: ignore[return-value]


def bind_internal_grpc_to_loopback() -> None:
    """Ray Serve 2.60 starts each replica's inter-deployment gRPC server on "[::]:0", every interface, whatever
    the node address (ray/serve/_private/replica.py, `_on_initialized`, after this constructor has run). In local
    mode nothing outside this machine may reach a Ray port: rewrite that one address to loopback."""
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_clf_loopback", False):
        return

    def add_port_loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port_loopback._clf_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port_loopback


def reuse_direct_ingress_port() -> None:
    """Ray Serve 2.60 opens a direct-ingress replica's HTTP socket without SO_REUSEADDR, unlike its proxy's
    (ray/serve/_private/replica.py, `_maybe_start_direct_ingress_servers`, after this constructor has run). The
    connections a stopped server closed then hold --port in TIME_WAIT for a minute: `clf serve` restarted on it, or a
    replica Serve restarts, could not listen. Open it with the proxy's socket options instead (SO_REUSEADDR and
    SO_REUSEPORT; clf refuses a --port something listens on before it starts)."""
    from ray.serve._private import replica

    original = replica.start_asgi_http_server
    if getattr(original, "_clf_reuse", False):
        return

    async def start_with_reuse(*args: Any, **kwargs: Any) -> Any:
        return await original(*args, **{**kwargs, "enable_so_reuseport": True})

    start_with_reuse._clf_reuse = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_with_reuse

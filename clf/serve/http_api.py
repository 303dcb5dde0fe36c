"""The HTTP contract of `clf serve`, without Ray: which images a request carries, and the JSON of an answer.

Kept apart from the Ray deployment so it is tested in milliseconds and any other front end can reuse it.
Requests: POST /predict with the encoded image as the raw body, or as the multipart field ``file``; POST
/predict/batch with one multipart field ``files`` per image; ``?topk=K`` on both. Answers: one JSON object per
image, ``{"label", "topk": [{"label", "prob"}], "probs": {class: p}}`` (a multi-label model: ``{"tags": [...],
"probs": {class: p}}``, ``topk`` ignored), or ``{"error": "..."}`` for an image that could not be read.
No torch and no Ray here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, AsyncIterable, Mapping, Sequence

import numpy as np

from clf.tasks import SINGLE_LABEL, Task

MAX_BODY_BYTES = 64 * 1024 * 1024  # one request; a bigger upload is refused before it is parsed
MAX_BATCH_FILES = 256  # images in one /predict/batch request
DEFAULT_TOPK = 5

PREDICT = "/predict"
PREDICT_BATCH = "/predict/batch"
HEALTH = "/health"
READY = "/ready"


class RequestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Part:
    """One field of a multipart/form-data body."""

    name: str
    filename: str | None
    content: bytes


def parse_topk(query: Mapping[str, str], num_classes: int) -> int:
    """``?topk=K`` (default 5), capped at the number of classes.

    Raises:
        RequestError: K is not a whole number >= 1.
    """
    text = query.get("topk")
    if text is None:
        return min(DEFAULT_TOPK, num_classes)
    try:
        k = int(text)
    except ValueError:
        raise RequestError(f"topk: {text!r} is not a whole number; give topk=K with K >= 1") from None
    if k < 1:
        raise RequestError(f"topk: must be >= 1, got {k}")
    return min(k, num_classes)


def body_too_large_message(limit: int, size: int | None = None) -> str:
    """The 413 answer's text: a declared Content-Length names its size, a chunked body only that it went past."""
    if size is None:
        return f"request body of more than {limit} bytes; send smaller images"
    return f"request body of {size} bytes, more than {limit}; send smaller images"


async def read_body(chunks: AsyncIterable[bytes], declared: str | None, limit: int | None = None) -> bytes:
    """A request's body, read as it streams in and refused as soon as it passes `limit` bytes (MAX_BODY_BYTES by
    default), whether its size was declared (Content-Length) or not (chunked): at most `limit` bytes are ever held.

    Raises:
        RequestError: 413, the body is larger than `limit`.
    """
    limit = MAX_BODY_BYTES if limit is None else limit
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise RequestError(body_too_large_message(limit, int(declared)), 413)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestError(body_too_large_message(limit), 413)
        parts.append(chunk)
    return b"".join(parts)


def single_image(body: bytes, content_type: str | None) -> bytes:
    """The image of a /predict request: the multipart field ``file``, else the raw body.

    Raises:
        RequestError: an empty body, a multipart body without a ``file`` field (or with several).
    """
    if _is_multipart(content_type):
        files = [p for p in parse_multipart(body, content_type or "") if p.name == "file"]
        if len(files) != 1:
            found = "no" if not files else f"{len(files)}"
            raise RequestError(f"multipart body has {found} 'file' fields; send one image as 'file', "
                               f"or several as 'files' to {PREDICT_BATCH}")
        image = files[0].content
    else:
        image = body
    if not image:
        raise RequestError("empty request body; send the encoded image (JPEG, PNG, ...) as the body")
    return image


def batch_images(body: bytes, content_type: str | None) -> list[bytes]:
    """The images of a /predict/batch request: every multipart field named ``files``, in order.

    An empty field stays in the list (its answer is an error entry); a request with no image at all is refused.

    Raises:
        RequestError: not multipart, no ``files`` field, or more than MAX_BATCH_FILES images.
    """
    if not _is_multipart(content_type):
        raise RequestError(f"{PREDICT_BATCH} takes multipart/form-data with one 'files' field per image "
                           f"(curl -F files=@a.jpg -F files=@b.jpg); send a single raw image to {PREDICT}")
    images = [p.content for p in parse_multipart(body, content_type or "") if p.name == "files"]
    if not images:
        raise RequestError("multipart body has no 'files' field; send each image as a 'files' field")
    if len(images) > MAX_BATCH_FILES:
        raise RequestError(f"{len(images)} images in one request, more than {MAX_BATCH_FILES}; split it", 413)
    return images


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The fields of a multipart/form-data body (RFC 7578), contents byte-exact.

    Raises:
        RequestError: no boundary in the Content-Type, or a body that does not follow it.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not match:
        raise RequestError("multipart Content-Type without a boundary; let the HTTP client build the body")
    delimiter = b"--" + match.group(1).strip().encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise RequestError("malformed multipart body (missing or unterminated boundary)")
    parts = []
    for chunk in chunks[1:-1]:  # chunks[0] is the preamble, chunks[-1] the epilogue after "--"
        parts.append(_parse_part(chunk))
    return parts


def _parse_part(chunk: bytes) -> Part:
    """One part: CRLF, headers, a blank line, the content, CRLF (the line break before the next delimiter)."""
    if chunk.startswith(b"\r\n"):
        chunk = chunk[2:]
    head, separator, content = chunk.partition(b"\r\n\r\n")
    if not separator:
        raise RequestError("malformed multipart body (a part without headers)")
    if content.endswith(b"\r\n"):
        content = content[:-2]
    disposition = ""
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            disposition = value
    name = _header_param(disposition, "name")
    if name is None:
        raise RequestError("malformed multipart body (a part without a field name)")
    return Part(name=name, filename=_header_param(disposition, "filename"), content=content)


def _header_param(header: str, key: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{key}="([^"]*)"', header) or re.search(rf"(?:^|;)\s*{key}=([^;\s]+)", header)
    return match.group(1) if match else None


def _is_multipart(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "multipart/form-data"


def prediction(logits: np.ndarray, classes: Sequence[str], topk: int, task: Task = SINGLE_LABEL) -> dict[str, Any]:
    """The answer for one image (its row of logits): best label, the k best with their probabilities, every
    class probability. Ranked on the logits with ties to the lower class index, and the probabilities are the
    same softmax, exactly as `clf infer` writes them.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if task.multilabel:
        return multilabel_prediction(logits, classes, task)
    probs = task.scores(logits[None])[0]
    order = task.ranked(logits[None], topk)[0]
    return {
        "label": classes[int(order[0])],
        "topk": [{"label": classes[int(i)], "prob": float(probs[i])} for i in order],
        "probs": {name: float(p) for name, p in zip(classes, probs)},
    }


def multilabel_prediction(logits: np.ndarray, classes: Sequence[str], task: Task) -> dict[str, Any]:
    """A multi-label model's answer for one image: its tags (every class whose sigmoid probability reaches the
    class's threshold, in class order, as `clf infer` writes them) and every class's probability."""
    probs = task.scores(logits[None])[0]
    decided = task.decide(logits[None])[0]
    return {
        "tags": [name for name, chosen in zip(classes, decided) if chosen],
        "probs": {name: float(p) for name, p in zip(classes, probs)},
    }


def error(message: str) -> dict[str, str]:
    """The answer for a request or image that could not be served: one line, no traceback."""
    return {"error": " ".join(str(message).split())}

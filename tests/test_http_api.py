"""clf.serve.http_api: which images a `clf serve` request carries and the JSON of the answers, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from clf.serve import http_api
from clf.serve.http_api import RequestError
from clf.serve.predictor import softmax

CLASSES = ["cat", "dog", "fox"]
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\r\n\r\n--not-a-boundary\r\n\x00\xff"  # CRLFs and dashes inside the content


def multipart(fields: list[tuple[str, bytes]], boundary: str = "XyZ123") -> tuple[bytes, str]:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n"
        for name, data in fields
    ) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_raw_body_is_the_image():
    assert http_api.single_image(JPEG, "image/jpeg") == JPEG
    assert http_api.single_image(JPEG, None) == JPEG


def test_multipart_file_field_is_byte_exact():
    body, content_type = multipart([("note", b"hello"), ("file", JPEG)])
    assert http_api.single_image(body, content_type) == JPEG


def test_quoted_boundary_and_preamble():
    body, content_type = multipart([("file", JPEG)], boundary="a'b(c)")
    assert http_api.single_image(b"preamble\r\n" + body, 'multipart/form-data; boundary="a\'b(c)"') == JPEG
    assert content_type  # the unquoted form is what curl sends; both parse


def test_batch_keeps_the_order_and_empty_fields():
    body, content_type = multipart([("files", b"one"), ("other", b"x"), ("files", b""), ("files", JPEG)])
    assert http_api.batch_images(body, content_type) == [b"one", b"", JPEG]


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"", "image/png", "empty request body; send the encoded image (JPEG, PNG, ...) as the body"),
        (*multipart([("files", JPEG)]), "multipart body has no 'file' fields; send one image as 'file', or several "
                                        "as 'files' to /predict/batch"),
        (*multipart([("file", JPEG), ("file", JPEG)]), "multipart body has 2 'file' fields; send one image as "
                                                       "'file', or several as 'files' to /predict/batch"),
        (b"--XyZ\r\n", "multipart/form-data", "multipart Content-Type without a boundary; let the HTTP client "
                                              "build the body"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc", "multipart/form-data; boundary=XyZ",
         "malformed multipart body (missing or unterminated boundary)"),
        (b"--XyZ\r\nno blank line\r\n--XyZ--", "multipart/form-data; boundary=XyZ",
         "malformed multipart body (a part without headers)"),
        (b"--XyZ\r\nContent-Type: a/b\r\n\r\nabc\r\n--XyZ--", "multipart/form-data; boundary=XyZ",
         "malformed multipart body (a part without a field name)"),
    ],
    ids=["empty", "no-file-field", "two-file-fields", "no-boundary", "unterminated", "no-headers", "no-name"],
)
def test_bad_single_requests(body, content_type, message):
    with pytest.raises(RequestError) as caught:
        http_api.single_image(body, content_type)
    assert str(caught.value) == message
    assert caught.value.status == 400


def test_batch_needs_multipart_files():
    with pytest.raises(RequestError, match="^/predict/batch takes multipart/form-data with one 'files' field"):
        http_api.batch_images(JPEG, "image/jpeg")
    with pytest.raises(RequestError, match="^multipart body has no 'files' field"):
        http_api.batch_images(*multipart([("file", JPEG)]))


def test_batch_too_many_files_is_413():
    body, content_type = multipart([("files", b"x")] * (http_api.MAX_BATCH_FILES + 1))
    with pytest.raises(RequestError) as caught:
        http_api.batch_images(body, content_type)
    assert caught.value.status == 413
    assert str(caught.value) == f"{http_api.MAX_BATCH_FILES + 1} images in one request, more than 256; split it"


@pytest.mark.parametrize("query, k", [({}, 3), ({"topk": "1"}, 1), ({"topk": "2"}, 2), ({"topk": "99"}, 3)])
def test_topk(query, k):
    assert http_api.parse_topk(query, len(CLASSES)) == k


def test_topk_default_is_five_when_there_are_more_classes():
    assert http_api.parse_topk({}, 10) == 5


@pytest.mark.parametrize("text, message", [("0", "topk: must be >= 1, got 0"),
                                           ("two", "topk: 'two' is not a whole number; give topk=K with K >= 1")])
def test_bad_topk(text, message):
    with pytest.raises(RequestError) as caught:
        http_api.parse_topk({"topk": text}, 3)
    assert str(caught.value) == message


def test_prediction_shape_and_values():
    logits = np.array([0.5, 2.0, -1.0], np.float32)
    probs = softmax(logits[None])[0]
    answer = http_api.prediction(logits, CLASSES, topk=2)
    assert answer == {
        "label": "dog",
        "topk": [{"label": "dog", "prob": float(probs[1])}, {"label": "cat", "prob": float(probs[0])}],
        "probs": {"cat": float(probs[0]), "dog": float(probs[1]), "fox": float(probs[2])},
    }


def test_prediction_ties_rank_the_lower_class_first_as_infer_does():
    answer = http_api.prediction(np.array([1.0, 3.0, 3.0], np.float32), CLASSES, topk=3)
    assert [entry["label"] for entry in answer["topk"]] == ["dog", "fox", "cat"]
    assert answer["label"] == "dog"


def test_error_is_one_line():
    assert http_api.error("image: bad\nsecond line") == {"error": "image: bad second line"}


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


def _read(parts: tuple[bytes, ...], declared: str | None, limit: int) -> bytes:
    import asyncio

    return asyncio.run(http_api.read_body(_chunks(*parts), declared, limit))


def test_read_body_within_the_limit_keeps_every_byte():
    assert _read((b"ab", b"cd", b""), None, limit=4) == b"abcd"
    assert _read((b"abcd",), "4", limit=4) == b"abcd"


def test_read_body_refuses_a_chunked_body_once_past_the_limit():
    consumed = []

    async def endless():  # a chunked upload that never ends: refused after the limit, not read to the end
        while True:
            consumed.append(1)
            yield b"x" * 3

    import asyncio

    with pytest.raises(RequestError) as caught:
        asyncio.run(http_api.read_body(endless(), None, limit=10))
    assert (caught.value.status, str(caught.value)) == (413, "request body of more than 10 bytes; send smaller images")
    assert len(consumed) == 4  # 12 bytes > 10: the fourth chunk


def test_read_body_refuses_a_declared_size_before_reading():
    with pytest.raises(RequestError) as caught:
        _read((), "11", limit=10)
    assert caught.value.status == 413
    assert str(caught.value) == "request body of 11 bytes, more than 10; send smaller images"


def test_read_body_default_limit_is_64_mb():
    assert http_api.MAX_BODY_BYTES == 64 * 1024 * 1024
    with pytest.raises(RequestError, match=f"^request body of more than {http_api.MAX_BODY_BYTES} bytes"):
        _read((bytes(http_api.MAX_BODY_BYTES), b"x"), None, limit=None)

"""Run-time test-time augmentation in clf.serve.predictor: the Predictor's TTA equals the explicit flip-and-average
computed here with the onnxruntime session directly, the no-TTA path is untouched, and a model whose graph already
averages TTA views is refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from serve_helpers import linear_model

from clf.config import TTA_VIEWS, Preprocess
from clf.data.preprocess import preprocess
from clf.errors import DataError
from clf.serve.metadata import ModelInfo
from clf.serve.predictor import Predictor, log_softmax, softmax
from clf.serve.tta_views import average_views, flip_view

CLASSES = ["cat", "dog", "fox", "owl"]
# Non-square with non-trivial statistics: a flip of the wrong axis, or an H/W swap, changes the numbers.
PRE = Preprocess(size=(6, 10), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
INFO = ModelInfo(classes=CLASSES, preprocess=PRE, arch="linear", img_size=10, clf_version="0.1.0")
AXES = {"": (), "h": (3,), "v": (2,), "hv": (2, 3)}  # the numpy axes of NCHW each view name reverses


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("tta")
    rng = np.random.default_rng(3)
    images = []
    for i in range(7):
        path = folder / f"img_{i}.png"  # PNG: decoded exactly, so the reference sees the same pixels
        cv2.imwrite(str(path), rng.integers(0, 256, (8 + i, 12 + 2 * i, 3), dtype=np.uint8))
        images.append(path)
    return SimpleNamespace(
        images=images,
        model=linear_model(folder / "linear.onnx", INFO),
        fixed=linear_model(folder / "fixed4.onnx", INFO, batch=4),
        baked=linear_model(folder / "baked.onnx", INFO, props={"clf.tta": "hflip"}),
        baked_none=linear_model(folder / "baked_none.onnx", INFO, props={"clf.tta": "none"}),
    )


def reference(model: Path, images: list[Path], views: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """By hand: the session on each explicitly flipped batch, softmax, mean over views, log; and view 0's logits."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = np.stack([preprocess(str(p), PRE) for p in images])
    outputs = [session.run(None, {"input": np.ascontiguousarray(np.flip(batch, AXES[v]))})[0] for v in views]
    probs = np.mean([softmax(o) for o in outputs], axis=0)
    return np.log(probs), outputs[0]


@pytest.mark.parametrize("tta", ["hflip", "vflip", "hvflip"])
def test_tta_equals_the_explicit_flip_and_average(setup, tta):
    result = Predictor(setup.model, device="cpu", batch_size=3, tta=tta).predict(setup.images)
    expected, plain = reference(setup.model, setup.images, TTA_VIEWS[tta])
    np.testing.assert_allclose(result.logits, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.probs(), np.exp(expected), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.plain_logits, plain, rtol=0, atol=1e-5)
    assert result.logits.dtype == np.float32 and result.ok_indices.tolist() == list(range(7))
    # the views really differ for this model: TTA changed the scores
    assert np.abs(result.logits - np.log(softmax(plain))).max() > 0.1


def test_the_unflipped_view_is_the_model_without_tta(setup):
    """plain_logits come from the same session runs as a run without TTA: bit-identical, so eval can show both."""
    without = Predictor(setup.model, device="cpu", batch_size=3).predict(setup.images)
    with_tta = Predictor(setup.model, device="cpu", batch_size=3, tta="hvflip").predict(setup.images)
    assert without.plain_logits is None
    np.testing.assert_array_equal(with_tta.plain_logits, without.logits)


def test_no_tta_runs_the_session_once_per_batch(setup):
    predictor = Predictor(setup.model, device="cpu", batch_size=3)
    feeds = record_feeds(predictor)
    predictor.predict(setup.images)  # batches of 3, 3, 1
    assert [len(f.array) for f in feeds] == [3, 3, 1]


def test_flipped_views_go_through_one_reused_contiguous_buffer(setup):
    predictor = Predictor(setup.model, device="cpu", batch_size=3, tta="hvflip")
    feeds = record_feeds(predictor)
    predictor.predict(setup.images)  # 3 batches x 4 views
    assert [len(f.array) for f in feeds] == [3] * 4 + [3] * 4 + [1] * 4
    assert all(f.contiguous and f.array.dtype == np.float32 for f in feeds)
    flipped = [f for k, f in enumerate(feeds) if k % 4]  # views h, v, hv of each batch
    assert len({f.buffer for f in flipped}) == 1
    assert flipped[0].buffer != feeds[0].buffer  # never written into the normalised batch itself
    first = feeds[0].array
    np.testing.assert_array_equal(feeds[1].array, first[..., ::-1])  # h = the width axis
    np.testing.assert_array_equal(feeds[2].array, first[..., ::-1, :])  # v = the height axis
    np.testing.assert_array_equal(feeds[3].array, first[..., ::-1, ::-1])


def record_feeds(predictor: Predictor) -> list[SimpleNamespace]:
    """Every input the predictor feeds its session, in order: a copy, whether it was contiguous, and the id of
    the buffer it lived in."""
    feeds: list[SimpleNamespace] = []
    session = predictor.session

    class Recorder:
        def run(self, names, feed):
            (array,) = feed.values()
            owner = array.base if array.base is not None else array
            feeds.append(SimpleNamespace(array=array.copy(), contiguous=array.flags.c_contiguous, buffer=id(owner)))
            return session.run(names, feed)

    predictor.session = Recorder()
    return feeds


def test_fixed_batch_model_with_tta(setup):
    """A model with a fixed batch axis is fed padded batches; the flips keep the padding rows out of the result."""
    result = Predictor(setup.fixed, device="cpu", tta="hflip").predict(setup.images)
    expected, _ = reference(setup.model, setup.images, TTA_VIEWS["hflip"])
    np.testing.assert_allclose(result.logits, expected, rtol=0, atol=1e-5)


def test_iter_predict_yields_the_tta_logits(setup):
    predictor = Predictor(setup.model, device="cpu", batch_size=4, tta="vflip")
    streamed = np.concatenate([batch.logits for batch in predictor.iter_predict(setup.images)])
    np.testing.assert_array_equal(streamed, predictor.predict(setup.images).logits)


def test_a_model_with_tta_in_its_graph_refuses_more_tta(setup):
    with pytest.raises(DataError) as err:
        Predictor(setup.baked, device="cpu", tta="vflip")
    assert str(err.value) == (f"{setup.baked}: the model already runs hflip TTA inside its graph (exported with --tta "
                              "hflip); leave out --tta vflip, it would flip the views twice")
    assert len(Predictor(setup.baked, device="cpu").predict(setup.images)) == 7  # without --tta it runs as exported
    assert Predictor(setup.baked_none, device="cpu", tta="hflip").tta == "hflip"  # "none" in the graph: allowed


def test_unknown_tta_name(setup):
    with pytest.raises(ValueError, match="tta must be one of none, hflip, vflip, hvflip, got 'rot90'"):
        Predictor(setup.model, device="cpu", tta="rot90")


def test_flip_view_is_a_view_not_a_copy():
    batch = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    for name, axes in AXES.items():
        view = flip_view(batch, name)
        assert np.shares_memory(view, batch)
        np.testing.assert_array_equal(view, np.flip(batch, axes))


def test_average_views_is_the_log_of_the_mean_probability_without_underflow():
    views = [np.array([[0.0, -200.0, 5.0], [1.0, 2.0, 3.0]], np.float32),
             np.array([[0.0, -300.0, 4.0], [3.0, 2.0, 1.0]], np.float32)]
    out = average_views(views)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(softmax(out), np.mean([softmax(v) for v in views], axis=0), rtol=1e-6, atol=1e-7)
    # float32 softmax gives 0 for the -200 and -300 logits: log of the mean would be -inf; here it is exact
    expected = np.logaddexp(-200.0 - np.logaddexp(0, 5), -300.0 - np.logaddexp(0, 4)) - np.log(2)
    assert np.isfinite(out).all() and out[0, 1] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(average_views([views[0]]), log_softmax(views[0]))  # one view: its log-softmax
    np.testing.assert_allclose(np.exp(log_softmax(views[1])), softmax(views[1]), rtol=1e-6)

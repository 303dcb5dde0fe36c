"""clf.serve.predictor: the batched onnxruntime pipeline against torch, bad images, overrides, no torch import."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import clf.serve.predictor as predictor_module
from clf.config import Preprocess
from clf.data.preprocess import preprocess
from clf.errors import DataError, ModelError
from clf.serve import PredictionResult, Predictor
from clf.serve.metadata import ModelInfo
from serve_helpers import export_onnx, graph_model, grey_image, plain_info

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "star"]
# Non-square, centre crop, non-ImageNet statistics: an H/W swap or a skipped step would show.
PRE = Preprocess(size=(24, 32), resize="shorter_crop", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
UNREADABLE = "not a readable image (corrupt, truncated or unsupported format)"


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(6, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))  # [N, 6, H/2, W/2]
        return self.head(x.mean(dim=(2, 3)))  # [N, C]


def _export(net: torch.nn.Module, path: Path, batch: int, dynamic: bool, info: ModelInfo | None) -> Path:
    return export_onnx(net, path, PRE.size, info, batch=batch, dynamic=dynamic)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """One tiny net exported three ways: clf model (dynamic batch), fixed batch of 4, no clf metadata."""
    torch.manual_seed(0)
    net = TinyNet().eval()
    folder = tmp_path_factory.mktemp("onnx")
    info = ModelInfo(classes=CLASSES, preprocess=PRE, arch="tiny", img_size=32, clf_version="0.1.0")
    return SimpleNamespace(
        net=net,
        clf=_export(net, folder / "model.onnx", 2, True, info),
        fixed4=_export(net, folder / "fixed4.onnx", 4, False, info),
        plain=_export(net, folder / "plain.onnx", 2, True, None),
    )


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Ten readable images of different sizes and formats, and the unreadable kinds users meet."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    good = []
    for i in range(10):
        height, width = 20 + 3 * i, 40 - 2 * i
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        good.append(path)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really" * 20)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    truncated = folder / "truncated.png"
    truncated.write_bytes(good[1].read_bytes()[:200])
    return SimpleNamespace(
        good=good, corrupt=corrupt, empty=empty, truncated=truncated, missing=folder / "missing.png"
    )


def torch_logits(net: torch.nn.Module, sources) -> np.ndarray:
    batch = torch.from_numpy(np.stack([preprocess(s, PRE) for s in sources]))
    with torch.no_grad():
        return net(batch).numpy()


def test_logits_match_torch(models, images):
    predictor = Predictor(models.clf, device="cpu", batch_size=4, workers=2)
    assert predictor.provider == "CPUExecutionProvider"
    assert predictor.classes == CLASSES and predictor.preprocess == PRE
    assert predictor.info.arch == "tiny" and predictor.batch_size == 4
    result = predictor.predict(images.good)  # 10 images: batches of 4, 4, 2
    expected = torch_logits(models.net, images.good)
    assert result.logits.dtype == np.float32 and result.logits.shape == (10, 3)
    np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-5)
    assert result.ok_indices.tolist() == list(range(10))
    assert result.failures == []
    assert result.ok_sources == images.good
    assert result.top1().tolist() == expected.argmax(axis=1).tolist()
    assert result.labels() == [CLASSES[i] for i in expected.argmax(axis=1)]
    probs = result.probs()
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(expected), dim=1).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_batch_size_and_workers_do_not_change_results(models, images):
    reference = Predictor(models.clf, device="cpu", batch_size=1, workers=1).predict(images.good).logits
    for batch_size, workers in [(3, 1), (3, 4), (64, 2)]:
        logits = Predictor(models.clf, device="cpu", batch_size=batch_size, workers=workers).predict(images.good).logits
        np.testing.assert_allclose(logits, reference, rtol=1e-6, atol=1e-6)


def test_bad_images_are_reported_and_skipped(models, images, caplog):
    g = images.good
    sources = [g[0], images.corrupt, g[1], g[2], images.empty, g[3], images.truncated, images.missing, g[4]]
    predictor = Predictor(models.clf, device="cpu", batch_size=3)
    with caplog.at_level(logging.WARNING, logger="clf.serve.predictor"):
        result = predictor.predict(sources)
    assert result.ok_indices.tolist() == [0, 2, 3, 5, 8]
    assert result.failures == [
        (images.corrupt, UNREADABLE),
        (images.empty, "empty file, not an image"),
        (images.truncated, UNREADABLE),
        (images.missing, "file not found"),
    ]
    assert caplog.messages == [
        f"{images.corrupt}: {UNREADABLE}; skipped",
        f"{images.empty}: empty file, not an image; skipped",
        f"{images.truncated}: {UNREADABLE}; skipped",
        f"{images.missing}: file not found; skipped",
    ]
    assert result.sources == sources
    assert result.ok_sources == [g[0], g[1], g[2], g[3], g[4]]
    np.testing.assert_allclose(result.logits, torch_logits(models.net, g[:5]), rtol=1e-5, atol=1e-5)


def test_strict_stops_at_the_first_bad_image(models, images):
    predictor = Predictor(models.clf, device="cpu", batch_size=2)
    sources = [images.good[0], images.good[1], images.good[2], images.empty, images.corrupt]
    with pytest.raises(DataError) as err:
        predictor.predict(sources, strict=True)
    assert str(err.value) == f"{images.empty}: empty file, not an image (--strict)"


def test_progress_reports_sources_done(models, images):
    done = []
    sources = [*images.good, images.corrupt]  # failures count as done too
    Predictor(models.clf, device="cpu", batch_size=4).predict(sources, progress=done.append)
    assert done == [4, 8, 11]


def test_bytes_and_arrays(models, images):
    rgb = cv2.cvtColor(cv2.imread(str(images.good[0])), cv2.COLOR_BGR2RGB)
    gray = np.random.default_rng(2).integers(0, 256, (30, 30), dtype=np.uint8)
    sources = [images.good[1].read_bytes(), rgb, b"nope", gray, rgb.astype(np.float32)]
    predictor = Predictor(models.clf, device="cpu", batch_size=2)
    result = predictor.predict(sources)
    assert result.ok_indices.tolist() == [0, 1, 3]
    assert [reason for _, reason in result.failures] == [UNREADABLE, "expected uint8 RGB array, got dtype float32"]
    assert result.failures[0][0] == b"nope" and result.failures[1][0] is sources[4]
    expected = torch_logits(models.net, [sources[0], rgb, gray])
    np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError) as err:
        predictor.predict(sources, strict=True)
    assert str(err.value) == f"<bytes #2>: {UNREADABLE} (--strict)"


def test_topk():
    logits = np.array([[0.1, 2.0, 1.0], [3.0, 3.0, -1.0]], np.float32)
    result = PredictionResult(["a", "b"], logits, np.array([0, 1]), [], CLASSES)
    assert result.topk(2).tolist() == [[1, 2], [0, 1]]  # a tie keeps the lower index first
    assert result.topk_labels(2) == [["square", "star"], ["circle", "square"]]
    assert result.topk(10).shape == (2, 3)
    assert result.labels() == ["square", "circle"]
    assert len(result) == 2


def test_no_sources(models):
    result = Predictor(models.clf, device="cpu").predict([])
    assert result.logits.shape == (0, 3) and result.ok_indices.shape == (0,)
    assert result.labels() == [] and result.probs().shape == (0, 3) and result.topk(2).shape == (0, 2)


def test_only_bad_sources(models, images):
    result = Predictor(models.clf, device="cpu", batch_size=2).predict([images.empty, images.corrupt])
    assert result.logits.shape == (0, 3) and len(result.failures) == 2


def test_fixed_batch_model_is_padded(models, images):
    predictor = Predictor(models.fixed4, device="cpu", batch_size=32)
    assert predictor.batch_size == 4
    sources = [*images.good, images.corrupt]  # 11 sources: last batch has 2 good images + 1 bad, padded to 4
    result = predictor.predict(sources)
    assert result.ok_indices.tolist() == list(range(10))
    np.testing.assert_allclose(result.logits, torch_logits(models.net, images.good), rtol=1e-5, atol=1e-5)


def test_model_without_clf_metadata(models, images):
    with pytest.raises(DataError) as err:
        Predictor(models.plain, device="cpu")
    assert str(err.value) == (
        f"{models.plain}: no clf metadata (exported by another tool?); "
        "pass --img-size, --mean, --std and --labels to use it"
    )
    predictor = Predictor(models.plain, device="cpu", preprocess=PRE)
    assert predictor.classes == ["0", "1", "2"]
    result = predictor.predict(images.good[:3])
    np.testing.assert_allclose(result.logits, torch_logits(models.net, images.good[:3]), rtol=1e-5, atol=1e-5)
    assert Predictor(models.plain, device="cpu", preprocess=PRE, classes=CLASSES).classes == CLASSES


def test_overrides_are_checked_against_the_model(models):
    with pytest.raises(DataError) as err:
        Predictor(models.clf, device="cpu", classes=["a", "b"])
    assert str(err.value) == f"{models.clf}: the model outputs 3 classes but 2 class names were given"
    with pytest.raises(DataError) as err:
        Predictor(models.clf, device="cpu", preprocess=Preprocess(size=(32, 32)))
    assert str(err.value) == (
        f"{models.clf}: the model takes 24x32 images but the preprocessing makes 32x32; pass a matching --img-size"
    )


def test_decoding_overlaps_session_run(models, images, monkeypatch):
    """While batch k runs, the pool has already decoded batch k+1 (a plain loop would never get there)."""
    decoded, threads = [], set()
    real_load = predictor_module.load_resized

    def recording_load(source, pre):
        image = real_load(source, pre)
        threads.add(threading.current_thread().name)
        decoded.append(source)
        return image

    monkeypatch.setattr(predictor_module, "load_resized", recording_load)
    predictor = Predictor(models.clf, device="cpu", batch_size=2, workers=2, prefetch=1)
    real_run, overlapped = predictor.session.run, []

    def waiting_run(names, feed):
        next_batch_end = min(len(images.good), 2 * (len(overlapped) + 2))
        deadline = time.monotonic() + 5
        while len(decoded) < next_batch_end and time.monotonic() < deadline:
            time.sleep(0.001)
        overlapped.append(len(decoded) >= next_batch_end)
        return real_run(names, feed)

    monkeypatch.setattr(predictor.session, "run", waiting_run, raising=False)
    result = predictor.predict(images.good)
    assert overlapped == [True] * 5
    assert all(name.startswith("clf-decode") for name in threads)
    assert result.ok_indices.tolist() == list(range(10))


def test_input_buffers_are_preallocated_and_reused(models, images, monkeypatch):
    seen, outputs = [], []
    real_normalize = predictor_module.normalize_batch

    def recording_normalize(batch, pre, out=None):
        seen.append(batch.base if batch.base is not None else batch)
        outputs.append(out.base if out is not None and out.base is not None else out)
        return real_normalize(batch, pre, out=out)

    monkeypatch.setattr(predictor_module, "normalize_batch", recording_normalize)
    result = Predictor(models.clf, device="cpu", batch_size=2, prefetch=1).predict(images.good)  # 5 batches
    assert len(seen) == 5
    assert len({id(buffer) for buffer in seen}) == 2  # a ring of prefetch + 1 uint8 buffers
    assert all(buffer.dtype == np.uint8 and buffer.shape == (2, 24, 32, 3) for buffer in seen)
    assert len({id(buffer) for buffer in outputs}) == 1  # one float32 input buffer for the whole call
    assert outputs[0].dtype == np.float32 and outputs[0].shape == (2, 3, 24, 32)
    fresh = Predictor(models.clf, device="cpu", batch_size=5).predict(images.good)  # reuse changed no result
    np.testing.assert_allclose(result.logits, fresh.logits, rtol=0, atol=1e-5)


def test_each_call_has_its_own_buffers(models, images, monkeypatch):
    """A second call never writes into the first call's buffers: the basis of the thread-safety contract."""
    outputs = []
    real_normalize = predictor_module.normalize_batch

    def recording_normalize(batch, pre, out=None):
        outputs.append(out.base if out.base is not None else out)
        return real_normalize(batch, pre, out=out)

    monkeypatch.setattr(predictor_module, "normalize_batch", recording_normalize)
    predictor = Predictor(models.clf, device="cpu", batch_size=5)
    first = predictor.iter_predict(images.good)
    next(first)
    list(predictor.iter_predict(images.good[:5]))
    next(first)
    assert len(outputs) == 3 and outputs[0] is outputs[2] and outputs[1] is not outputs[0]


def test_one_predictor_serves_threads_at_once(models, images):
    """predict() from several threads at once gives exactly the sequential results."""
    predictor = Predictor(models.clf, device="cpu", batch_size=3, workers=2)
    orders = [images.good, images.good[::-1], images.good[3:] + images.good[:3], images.good[::2] * 3]
    expected = [predictor.predict(order).logits for order in orders]
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(len(orders))}
    start = threading.Barrier(len(orders))

    def work(i: int) -> None:
        start.wait()
        for _ in range(5):
            got[i].append(predictor.predict(orders[i]).logits)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(orders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, reference in enumerate(expected):
        assert len(got[i]) == 5
        for logits in got[i]:
            np.testing.assert_array_equal(logits, reference)


@pytest.fixture(scope="module")
def greys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("greys")
    return [str(grey_image(folder / f"g{grey}.png", grey)) for grey in (20, 200, 30, 40, 50, 60)]


def test_nan_outputs_are_an_error_naming_the_images(tmp_path, greys):
    """sqrt(mean - 0.5): NaN for the 5 dark images; argmax would have made them class 0, silently."""
    model = graph_model(tmp_path / "nan.onnx", "nan", plain_info())
    predictor = Predictor(model, device="cpu", batch_size=4)
    with pytest.raises(ModelError) as err:
        predictor.predict(greys)
    assert str(err.value) == (
        f"{model}: the model outputs NaN or inf for 5 of 6 images ({greys[0]}, {greys[2]}, {greys[3]}, ...); "
        "it is broken (diverged training or a bad export): re-train or re-export it"
    )
    with pytest.raises(ModelError) as err:  # streaming: the first batch with such rows stops the iteration
        list(predictor.iter_predict(greys))
    assert f"outputs NaN or inf for 3 of 4 images ({greys[0]}, {greys[2]}, {greys[3]})" in str(err.value)
    assert predictor.predict([greys[1]]).logits.shape == (1, 3)  # a bright image alone is fine


@pytest.mark.parametrize("kind, shape", [("nchw", "[N, 3, 16, 16]"), ("rank1", "[N]")])
def test_output_that_is_not_n_by_c(tmp_path, kind, shape):
    model = graph_model(tmp_path / f"{kind}.onnx", kind, plain_info())
    with pytest.raises(DataError) as err:
        Predictor(model, device="cpu")
    assert str(err.value) == (f"{model}: output has shape {shape}, not [N, C] (one row of class scores per image); "
                              "clf needs a classifier")


def test_repeated_class_names(tmp_path):
    model = graph_model(tmp_path / "dup.onnx", "means", plain_info(["a", "b", "a"]))
    with pytest.raises(DataError) as err:
        Predictor(model, device="cpu")
    assert str(err.value) == f"{model}: class 'a' appears twice in its clf metadata; each class needs its own name"
    good = graph_model(tmp_path / "good.onnx", "means", plain_info())
    with pytest.raises(DataError) as err:
        Predictor(good, device="cpu", classes=["x", "y", "x"])
    assert str(err.value) == f"{good}: class 'x' appears twice in --labels; each class needs its own name"


def test_abandoned_iteration_shuts_the_pool_down(models, images):
    before = threading.active_count()
    batches = Predictor(models.clf, device="cpu", batch_size=2, workers=3).iter_predict(images.good)
    first = next(batches)
    assert first.ok_indices.tolist() == [0, 1] and first.logits.shape == (2, 3)
    batches.close()
    assert threading.active_count() == before


NO_TORCH_SCRIPT = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now fails
import clf.serve
lazy = [name for name in ("onnxruntime", "cv2", "clf.serve.predictor") if name in sys.modules]
from clf.serve import Predictor, write_submission, classification_report
predictor = Predictor(sys.argv[1], device="cpu", batch_size=4)
result = predictor.predict(sys.argv[2:])
print(json.dumps({"lazy": lazy, "logits": result.logits.tolist(), "labels": result.labels(),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m])}))
"""


def test_serve_works_without_torch(models, images):
    paths = [str(p) for p in images.good[:6]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(models.clf), *paths],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["lazy"] == []  # importing clf.serve alone loads neither onnxruntime nor OpenCV
    assert out["torch"] == []
    expected = torch_logits(models.net, paths)
    np.testing.assert_allclose(np.array(out["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert out["labels"] == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_preprocess_overrides_by_field(models, images, caplog):
    """A mapping changes only the named fields: of the model's own Preprocess, or of the defaults for a plain model."""
    fields = {"size": PRE.size, "resize": "shorter_crop", "mean": PRE.mean, "std": PRE.std}
    plain = Predictor(models.plain, device="cpu", preprocess=fields)
    assert plain.preprocess == PRE
    np.testing.assert_allclose(plain.predict(images.good[:3]).logits, torch_logits(models.net, images.good[:3]),
                               rtol=1e-5, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="clf.serve.predictor"):
        shifted = Predictor(models.clf, device="cpu", preprocess={"mean": (0.0, 0.0, 0.0)})
    assert shifted.preprocess == Preprocess(size=(24, 32), resize="shorter_crop", mean=(0, 0, 0), std=PRE.std)
    assert len(caplog.messages) == 1 and "preprocessing overridden" in caplog.messages[0]
    with pytest.raises(DataError, match="no clf metadata"):  # a plain model needs at least the size
        Predictor(models.plain, device="cpu", preprocess={"mean": (0.0, 0.0, 0.0)})
    with pytest.raises(DataError) as err:
        Predictor(models.plain, device="cpu", preprocess={"size": (24, 32), "std": (0.0, 1.0, 1.0)})
    assert str(err.value) == f"{models.plain}: bad preprocessing override (mean and std need 3 values each, std > 0)"


def test_onnxruntime_threads_do_not_spin(models):
    """Busy-waiting intra-op threads would take the cores the decode threads need between runs."""
    options = Predictor(models.clf, device="cpu", threads=1).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1


def test_buffers_beyond_a_container_s_memory_are_refused(models, images, tmp_path, monkeypatch):
    """The limit is the container's (cgroup) when it is below the machine's RAM: a 64 GB host with 20 kB for us."""
    from clf import system

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("20000\n")  # two 24x32 images need 2 x 16128 bytes of buffers (ring, float input)
    usage.write_text("0\n")
    monkeypatch.setattr(system, "CGROUP_LIMITS", ((limit, usage),))
    with pytest.raises(DataError) as err:
        Predictor(models.clf, device="cpu", batch_size=2).predict(images.good[:2])
    assert str(err.value) == (f"{models.clf}: batches of 2 images of 24x32 need 3.23e-05 GB of buffers, more than "
                              "this machine's 2e-05 GB; lower --batch-size")
    assert len(Predictor(models.clf, device="cpu", batch_size=1).predict(images.good[:2])) == 2  # 16 kB fits


def test_bad_arguments_are_setting_errors_and_still_value_errors(models):
    from clf.errors import ClfError, SettingError

    with pytest.raises(SettingError, match="batch_size must be >= 1, got 0") as err:
        Predictor(models.clf, device="cpu", batch_size=0)
    assert isinstance(err.value, ClfError) and isinstance(err.value, ValueError)
    with pytest.raises(SettingError, match="tta must be one of none, hflip, vflip, hvflip, got 'rot90'"):
        Predictor(models.clf, device="cpu", tta="rot90")

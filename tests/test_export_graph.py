"""clf.export.graph: the exporters and the fallback between them, fp16, node order, onnxslim, metadata, checker."""

import logging
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import assert_io_contract, assert_runs_like_torch
from onnx import TensorProto, helper
from torch import nn

from clf.errors import ClfError
from clf.export import graph
from clf.models.registry import create_model

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("cnn", NUM_CLASSES, img_size=32).eval()


@pytest.fixture(scope="module")
def cnn_onnx(cnn, tmp_path_factory):
    """The cnn exported once with TorchScript (the fast exporter), shared by the read-only tests."""
    path = tmp_path_factory.mktemp("graph") / "cnn.onnx"
    assert graph.export_graph(cnn, 32, path, exporter="torchscript") == "torchscript"
    return path


# The dynamo exporter (auto's first choice) is exercised on every seed architecture in test_export.py.


@pytest.mark.parametrize("opset", [17, 18])
def test_torchscript_meets_the_io_contract(cnn, tmp_path, opset):
    path = tmp_path / "cnn.onnx"
    assert graph.export_graph(cnn, 32, path, opset=opset, exporter="torchscript") == "torchscript"
    model = assert_io_contract(path, NUM_CLASSES, 32)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert_runs_like_torch(path, cnn, 32)


def test_non_square_input_keeps_height_and_width(cnn, tmp_path):
    path = tmp_path / "cnn.onnx"
    graph.export_graph(cnn, (32, 48), path, exporter="torchscript")
    assert_io_contract(path, NUM_CLASSES, 32, 48)
    assert_runs_like_torch(path, cnn, 32, 48)


def test_auto_falls_back_to_torchscript_and_says_why(cnn, tmp_path, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("dynamo cannot trace this\nsecond line")

    monkeypatch.setitem(graph._EXPORTERS, "dynamo", broken)
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert graph.export_graph(cnn, 32, tmp_path / "cnn.onnx") == "torchscript"
    assert [r.getMessage() for r in caplog.records] == [
        "dynamo exporter failed (dynamo cannot trace this); trying the next one"
    ]
    assert_io_contract(tmp_path / "cnn.onnx", NUM_CLASSES, 32)


def test_a_graph_failing_the_checker_counts_as_a_failed_export(cnn, tmp_path, monkeypatch):
    def writes_garbage(model, example, path, opset):
        path.write_bytes(b"not an onnx model")

    monkeypatch.setitem(graph._EXPORTERS, "dynamo", writes_garbage)
    assert graph.export_graph(cnn, 32, tmp_path / "cnn.onnx") == "torchscript"


def test_every_exporter_failing_is_one_error_naming_each(cnn, tmp_path, monkeypatch):
    def breaks(name):
        def export(*args):
            raise ValueError(f"{name} broke")

        return export

    for name in ("dynamo", "torchscript"):
        monkeypatch.setitem(graph._EXPORTERS, name, breaks(name))
    with pytest.raises(ClfError) as info:
        graph.export_graph(cnn, 32, tmp_path / "cnn.onnx")
    expected = "ONNX export failed with every exporter: dynamo: dynamo broke | torchscript: torchscript broke"
    assert str(info.value) == expected


@pytest.mark.parametrize(
    "exporter, opset, message",
    [
        ("onnxsim", 18, "--exporter must be one of auto, dynamo, torchscript, got 'onnxsim'"),
        ("auto", 99, "--opset 99: clf exports opsets 7 to 23 (torchscript 7-20, dynamo 18-23); pass one of those"),
        ("auto", 5, "--opset 5: clf exports opsets 7 to 23 (torchscript 7-20, dynamo 18-23); pass one of those"),
        ("dynamo", 17, ("--opset 17: the dynamo exporter writes opset 18 or newer; "
                        "use --exporter torchscript or a newer --opset")),
        ("torchscript", 21, ("--opset 21: the torchscript exporter writes opset 20 or older; "
                             "use --exporter dynamo or an older --opset")),
    ],
)
def test_exporter_and_opset_are_checked_in_one_place(exporter, opset, message):
    with pytest.raises(ClfError) as info:
        graph.check_exporter_opset(exporter, opset)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "exporter, opset, order",
    [("auto", 7, ["torchscript"]), ("auto", 17, ["torchscript"]), ("auto", 18, ["dynamo", "torchscript"]),
     ("auto", 20, ["dynamo", "torchscript"]), ("auto", 21, ["dynamo"]), ("auto", 23, ["dynamo"]),
     ("dynamo", 18, ["dynamo"]), ("torchscript", 18, ["torchscript"])],
)
def test_auto_tries_only_the_exporters_that_write_the_opset(exporter, opset, order):
    graph.check_exporter_opset(exporter, opset)
    assert graph.exporter_order(exporter, opset) == order


def test_the_opset_ranges_are_torchs():
    from torch.onnx import _constants

    assert graph.OPSETS == {
        "torchscript": (_constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET),
        "dynamo": (18, _constants.ONNX_MAX_OPSET),
    }


def test_an_exporter_that_writes_another_opset_has_failed(cnn, tmp_path, monkeypatch):
    """torch clamps or converts some requests quietly (TorchScript wrote 20 for 21; dynamo 18 for 99)."""
    export = graph._EXPORTERS["torchscript"]
    monkeypatch.setitem(graph._EXPORTERS, "torchscript", lambda model, x, path, opset: export(model, x, path, 17))
    with pytest.raises(ClfError) as info:
        graph.export_graph(cnn, 32, tmp_path / "cnn.onnx", opset=16, exporter="torchscript")
    assert str(info.value) == "ONNX export failed with every exporter: torchscript: wrote opset 17 instead of 16"


def test_the_choice_constants_import_without_torch():
    import subprocess

    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from clf.export.graph import EXPORTERS, OPSETS\nfrom clf.export.targets import TARGETS\n"
            "from clf.config import ExportConfig\nExportConfig(checkpoint='x')\nprint(sorted(TARGETS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['onnx', 'triton']"


def test_torchscript_failure_does_not_dump_its_ir_graph_on_stdout(tmp_path, capfd, caplog):
    # AlexNet's tail in small: an adaptive pool from 1x1 up to 6x6 is beyond TorchScript (alexnet at 64 px hits it),
    # and torch then prints the whole IR graph from C++.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=32), nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(144, 4))
    model.eval()
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="clf"), pytest.raises(ClfError, match="adaptive_avg_pool2d"):
        graph.export_graph(model, 32, tmp_path / "pool.onnx", exporter="torchscript")
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err and out == ""
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING


def test_fp16_keeps_float32_io_and_halves_the_weights(cnn, cnn_onnx):
    half = graph.convert_to_fp16(onnx.load(str(cnn_onnx)))
    onnx.checker.check_model(half, full_check=True)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    kinds = {init.data_type for init in half.graph.initializer}
    assert TensorProto.FLOAT16 in kinds and TensorProto.FLOAT not in kinds
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        reference = cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], reference, atol=1e-2, rtol=0)


def _two_node_graph(reverse: bool) -> onnx.GraphProto:
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])]
    return helper.make_graph(
        nodes[::-1] if reverse else nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )


def test_toposort_puts_producers_before_consumers():
    g = _two_node_graph(reverse=True)
    graph.toposort(g)
    assert [n.op_type for n in g.node] == ["Relu", "Neg"]


def test_toposort_refuses_an_undefined_input():
    g = _two_node_graph(reverse=False)
    g.node[0].input[0] = "missing"
    with pytest.raises(ClfError, match="cycle or an undefined input"):
        graph.toposort(g)


def test_simplify_keeps_the_contract_and_the_numbers(cnn, cnn_onnx, tmp_path):
    path = tmp_path / "slim.onnx"
    onnx.save(graph.simplify(onnx.load(str(cnn_onnx))), str(path))
    assert_io_contract(path, NUM_CLASSES, 32)
    assert_runs_like_torch(path, cnn, 32)


def test_simplify_without_onnxslim_says_how_to_install_it(cnn_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    with pytest.raises(ClfError, match=r"^--simplify needs onnxslim: pip install onnxslim$"):
        graph.simplify(onnx.load(str(cnn_onnx)))


def test_set_metadata_replaces_clf_keys_and_keeps_others(cnn_onnx):
    model = onnx.load(str(cnn_onnx))
    onnx.helper.set_model_props(model, {"author": "someone", "clf.arch": "old"})
    graph.set_metadata(model, {"clf.arch": "cnn", "clf.classes": '["a", "b"]'})
    props = [(p.key, p.value) for p in model.metadata_props]
    assert sorted(props) == [("author", "someone"), ("clf.arch", "cnn"), ("clf.classes", '["a", "b"]')]


def test_check_names_the_file_on_failure(cnn_onnx, tmp_path):
    model = onnx.load(str(cnn_onnx))
    model.graph.node[0].input[0] = "nowhere"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ClfError, match=rf"^{bad}: ONNX checker failed: "):
        graph.check(bad)
    graph.check(cnn_onnx)  # the good one passes

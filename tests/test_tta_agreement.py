"""Run-time TTA (`clf infer --tta` on a plain export) and baked-in TTA (`clf export --tta`) give the same predictions:
one definition of the averaged views (clf.serve.tta_views.average_views, the exported TTA graph). Skipped until the
branch with `clf export --tta` is merged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cli_helpers import clf, error_line
from export_helpers import make_checkpoint, make_data
from serve_helpers import cli_state

from clf.config import ExportConfig
from clf.data.datasets import load_labelled
from clf.serve.predictor import Predictor

# --force: the test run records no flips in its augmentation, and export refuses flips a run was not trained with
FAST = ["--exporter", "torchscript", "--batch-sizes", "1,3", "--device", "cpu", "--force"]
pytestmark = pytest.mark.skipif("tta" not in {f.name for f in dataclasses.fields(ExportConfig)},
                                reason="needs `clf export --tta`")


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.mark.parametrize("tta", ["hflip", "hvflip"])
def test_run_time_tta_equals_the_exported_tta_graph(tmp_path, tta):
    data = make_data(tmp_path / "data")
    run = make_checkpoint(tmp_path / "run" / "best.pt", data=data).parent
    plain, baked = tmp_path / "plain.onnx", tmp_path / "baked.onnx"
    for out, extra in ((plain, []), (baked, ["--tta", tta])):
        result = clf("export", run, "--onnx", "-o", out, *FAST, *extra)
        assert result.exit_code == 0, result.output
    images = load_labelled(str(data)).paths
    at_run_time = Predictor(plain, device="cpu", tta=tta).predict(images)
    in_graph = Predictor(baked, device="cpu").predict(images)
    np.testing.assert_allclose(at_run_time.logits, in_graph.logits, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(at_run_time.top1(), in_graph.top1())
    refused = clf("infer", data / "circle", "--model", baked, "--tta", "hflip", "--csv", tmp_path / "sub.csv")
    assert refused.exit_code == 2
    assert error_line(refused) == (f"error: {baked}: the model already runs {tta} TTA inside its graph (exported "
                                   f"with --tta {tta}); leave out --tta hflip, it would flip the views twice")

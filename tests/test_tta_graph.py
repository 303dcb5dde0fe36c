"""TTA inside the graph (clf.export.ensemble.DeployedModel views, `clf export --tta`): the graph equals the explicit
flip-and-average, and flips the runs were not trained with are refused unless --force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from cli_helpers import clf, error_line
from ensemble_helpers import (  # noqa: F401 - _cli_state is an autouse fixture
    CLI_FAST, _cli_state, FAST, HFLIP, NO_FLIP, hand_average, logits_of, make_member, metadata, model_of, proof)
from export_helpers import make_data
from torch import nn

from clf.config import TTA_VIEWS, ExportConfig
from clf.export.ensemble import DeployedModel, flip_view
from clf.export.onnx_export import export_onnx



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("tta-data"))


class Asymmetric(nn.Module):
    """A tiny model that tells a flipped image from the original (a linear map of every pixel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 4 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_views_flip_width_and_height():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    assert torch.equal(flip_view(x, ""), x)
    assert torch.equal(flip_view(x, "h"), x.flip(3))
    assert torch.equal(flip_view(x, "h")[0, 0, 0], torch.tensor([5.0, 4, 3, 2, 1, 0]))
    assert torch.equal(flip_view(x, "v")[0, 0, :, 0], torch.tensor([18.0, 12, 6, 0]))
    assert torch.equal(flip_view(x, "hv"), x.flip(2).flip(3))


@pytest.mark.parametrize("tta", ["hflip", "vflip", "hvflip"])
@pytest.mark.parametrize("average", ["prob", "logit"])
def test_the_tta_module_is_the_explicit_flip_and_average(tta, average):
    model = Asymmetric().eval()
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 6)).astype(np.float32)
    flips = {"": x, "h": x[..., ::-1], "v": x[:, :, ::-1], "hv": x[:, :, ::-1, ::-1]}
    views = [logits_of(model, np.ascontiguousarray(flips[v])) for v in TTA_VIEWS[tta]]
    expected = hand_average(views, [1] * len(views), average)
    with torch.no_grad():
        got = DeployedModel([model], [1.0], average, TTA_VIEWS[tta])(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert not np.allclose(views[0], views[1], atol=1e-3)  # the flips really change the model's answer


def test_the_tta_graph_is_the_explicit_flip_and_average(tmp_path, data):
    run = make_member(tmp_path / "a", data, seed=3, augment=HFLIP + [{"op": "vflip", "p": 0.5}])
    result = export_onnx(ExportConfig(checkpoint=str(run), tta="hvflip", **FAST))
    assert result.parity.passed and result.path == run / "model.onnx"
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    model = model_of(run)
    views = [logits_of(model, np.ascontiguousarray(v))
             for v in (x, x[..., ::-1], x[:, :, ::-1], x[:, :, ::-1, ::-1])]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, hand_average(views, [1, 1, 1, 1], "prob"), atol=1e-5, rtol=0)
    assert metadata(result.path)["clf.tta"] == "hvflip" and proof(result.path)["tta"] == "hvflip"
    assert [m["run"] for m in proof(result.path)["members"]] == ["a"]


def test_hflip_on_a_run_trained_without_flips_is_refused(tmp_path, data):
    run = make_member(tmp_path / "digits", data, augment=NO_FLIP)
    result = clf("export", run, "--tta", "hflip", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: --tta hflip: {run / 'best.pt'} was trained without horizontal flips (hflip 0), and flipped views "
        "are wrong where orientation matters (digits, text); pass --force to add them anyway")
    assert not (run / "model.onnx").exists()


def test_vflip_needs_a_run_trained_with_vertical_flips(tmp_path, data):
    run = make_member(tmp_path / "a", data)  # hflip only
    assert clf("export", run, "--tta", "hflip", *CLI_FAST).exit_code == 0
    result = clf("export", run, "--tta", "vflip", *CLI_FAST)
    assert result.exit_code == 2
    assert "was trained without vertical flips (vflip 0)" in error_line(result)


def test_force_adds_the_flips_anyway(tmp_path, data):
    run = make_member(tmp_path / "digits", data, augment=NO_FLIP)
    result = clf("export", run, "--tta", "hflip", "--force", *CLI_FAST)
    assert result.exit_code == 0, result.output
    assert metadata(run / "model.onnx")["clf.tta"] == "hflip"


def test_a_member_trained_without_flips_is_named_among_several(tmp_path, data):
    a = make_member(tmp_path / "a", data, seed=1)
    b = make_member(tmp_path / "b", data, seed=2, augment=[])
    result = clf("export", a, b, "-o", tmp_path / "e.onnx", "--tta", "hflip", *CLI_FAST)
    assert result.exit_code == 2 and f"{b / 'best.pt'} was trained without horizontal flips" in error_line(result)


def test_an_unrecorded_augmentation_falls_back_to_config_json_else_refuses(tmp_path, data):
    run = make_member(tmp_path / "old", data, augment=None)  # a version-1 checkpoint: no "augment" key
    result = clf("export", run, "--tta", "hflip", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: --tta hflip: {run / 'best.pt'} does not record its training augmentation, so horizontal flips "
        "cannot be checked (they are wrong for digits and text); pass --force to add the flipped views anyway")
    (run / "config.json").write_text('{"augment": [{"op": "hflip", "p": 0.5}]}')
    assert clf("export", run, "--tta", "hflip", *CLI_FAST).exit_code == 0

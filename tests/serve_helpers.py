"""Shared bits of the inference tests: tiny ONNX models whose outputs are known by hand, images, CLI plumbing."""

from __future__ import annotations

import contextlib
import csv
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import onnx
import torch

from clf.config import Preprocess
from clf.serve.metadata import ModelInfo, info_to_props

# The brightness model sees pixel / 255 (no mean/std shift), so its input mean is the image's grey level / 255.
PLAIN = Preprocess(size=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
BRIGHTNESS_CLASSES = ["dark", "mid", "bright"]
CENTRES = (0.2, 0.5, 0.8)
UNREADABLE = "not a readable image (corrupt, truncated or unsupported format)"


class BrightnessNet(torch.nn.Module):
    """logits[k] = -100 * (mean(x) - centre[k])^2: the class whose centre is nearest the mean brightness wins."""

    def __init__(self, centres: Sequence[float] = CENTRES) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(list(centres), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.mean(dim=(1, 2, 3))[:, None]  # [N, 1]
        return -100.0 * (brightness - self.centres) ** 2  # [N, C]


def brightness_logits(grey: float, centres: Sequence[float] = CENTRES) -> np.ndarray:
    """What BrightnessNet outputs for a uniform image of this grey level (0..255)."""
    return (-100.0 * (grey / 255.0 - np.asarray(centres)) ** 2).astype(np.float32)


def export_onnx(
    net: torch.nn.Module,
    path: Path,
    size: tuple[int, int],
    info: ModelInfo | None = None,
    batch: int = 2,
    dynamic: bool = True,
) -> Path:
    """TorchScript export (fast) of `net` to [N,3,H,W] -> [N,C]; clf metadata added when `info` is given."""
    dummy = torch.zeros(batch, 3, *size)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (dummy,), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    if info is not None:
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, info_to_props(info))
        onnx.save(model, str(path))
    return path


def brightness_model(path: Path, metadata: bool = True, classes: Sequence[str] = BRIGHTNESS_CLASSES) -> Path:
    info = ModelInfo(classes=list(classes), preprocess=PLAIN, arch="brightness", img_size=16, clf_version="0.1.0")
    return export_onnx(BrightnessNet(), path, PLAIN.size, info if metadata else None)


def grey_image(path: Path, grey: int, size: tuple[int, int] = (20, 30)) -> Path:
    """A uniform grey image (PNG exactly; JPEG within 1 level), any size: resizing keeps it uniform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size, 3), grey, np.uint8))
    return path


def bad_images(folder: Path, good_png: Path) -> dict[str, Path]:
    """The unreadable files users meet: a corrupt JPEG, a truncated PNG, a text file named .png."""
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good_png.read_bytes()[:60])
    text = folder / "notes.png"
    text.write_text("these are my notes, not a picture\n")
    return {"corrupt": corrupt, "truncated": truncated, "text": text}


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@contextlib.contextmanager
def cli_state() -> Iterator[None]:
    """Rich's consoles wide enough that no log line or table row wraps (our assertions want each message on one
    line); logging needs no undoing: each `clf` invocation restores it on exit."""
    from clf import cli

    widths = (cli.console._width, cli.err_console._width)
    cli.console.width = cli.err_console.width = 1000
    try:
        yield
    finally:
        cli.console._width, cli.err_console._width = widths


def one_line(text: str) -> str:
    """Output with runs of whitespace collapsed (rich pads table cells)."""
    return " ".join(text.split())



def graph_model(path: Path, kind: str, info: ModelInfo | None = None, size: tuple[int, int] = (16, 16)) -> Path:
    """A tiny hand-built ONNX model (no torch export, instant) of one of the broken kinds users meet.

    kind: "nan" (scores sqrt(mean - 0.5) per channel: NaN for dark images, finite for bright ones), "nchw" (the
    input itself: [N, 3, H, W] out), "rank1" (one number per image: [N] out), "means" (per-channel means: a healthy
    [N, 3] classifier).
    """
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *size])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    means = helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0)
    if kind == "nan":
        nodes = [means, helper.make_node("Sub", ["means", "half"], ["shifted"]),
                 helper.make_node("Sqrt", ["shifted"], ["logits"])]
        out_shape: list = ["N", 3]
    elif kind == "means":
        nodes, out_shape = [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)], ["N", 3]
    elif kind == "nchw":
        nodes, out_shape = [helper.make_node("Identity", ["input"], ["logits"])], ["N", 3, *size]
    elif kind == "rank1":
        nodes = [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[1, 2, 3], keepdims=0)]
        out_shape = ["N"]
    else:
        raise ValueError(kind)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, kind, [x], [y], initializer=[half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if info is not None:
        helper.set_model_props(model, info_to_props(info))
    onnx.save(model, str(path))
    return path


def plain_info(classes: Sequence[str] = BRIGHTNESS_CLASSES) -> ModelInfo:
    """clf metadata for the graph models: PLAIN preprocessing, the given class names (duplicates allowed here)."""
    return ModelInfo(classes=list(classes), preprocess=PLAIN, arch="graph", img_size=16, clf_version="0.1.0")


def linear_model(path: Path, info: ModelInfo, seed: int = 0, batch: int | str = "N", temperature: float | None = None,
                 props: dict[str, str] | None = None) -> Path:
    """A hand-built ONNX linear classifier on the flattened input (no torch export, instant): logits = x W + b with
    seeded weights, so unlike BrightnessNet it changes its mind when the image is flipped (TTA tests). `batch` an int
    fixes the batch axis; `temperature` divides the logits (a calibrated export); `props` are added to the metadata.
    """
    from onnx import TensorProto, helper, numpy_helper

    height, width = info.preprocess.size
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((3 * height * width, len(info.classes))).astype(np.float32) * 0.5
    bias = rng.standard_normal(len(info.classes)).astype(np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, height, width])
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "weight", "bias"], ["scores" if temperature else "logits"])]
    initializers = [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")]
    if temperature:
        nodes.append(helper.make_node("Div", ["scores", "temperature"], ["logits"]))
        initializers.append(numpy_helper.from_array(np.array(temperature, np.float32), "temperature"))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(info.classes)])
    graph = helper.make_graph(nodes, "linear", [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {**info_to_props(info), **(props or {})})
    onnx.save(model, str(path))
    return path

"""clf.models.pretrained: weights files read safely (clf checkpoints, state dicts, safetensors) and loaded into a
new model, the head re-initialised for another class count, every refusal one exact line."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from checkpoint_factory import write_checkpoint

from clf.errors import ModelError
from clf.models.pretrained import load_pretrained, read_pretrained
from clf.models.registry import create_model


def cnn(classes: int = 4, **kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model("cnn", classes, img_size=32, **kwargs)


def refusal(call, *args) -> str:
    with pytest.raises(ModelError) as error:
        call(*args)
    return str(error.value)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def body(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("head.2.")}


# ---------------------------------------------------------------- reading


def test_a_clf_checkpoint_brings_arch_design_and_classes(tmp_path):
    path = write_checkpoint(tmp_path / "run" / "best.pt")
    weights = read_pretrained(path)
    assert (weights.path, weights.arch, weights.classes) == (path, "cnn", ["circle", "square", "star", "triangle"])
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights.design_kwargs("cnn") == {"width": 16, "convs_per_block": 2, "hidden": 0}
    assert read_pretrained(tmp_path / "run").path == path  # a run folder: its best.pt


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_a_plain_state_dict_optionally_nested(tmp_path, nest):
    state = cnn().state_dict()
    torch.save(state if nest is None else {nest: state, "epoch": 3}, tmp_path / "w.pth")
    weights = read_pretrained(tmp_path / "w.pth")
    assert weights.arch is None and weights.design_kwargs("cnn") == {}
    assert_same(weights.state, state)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = cnn().state_dict()
    save_file(state, tmp_path / "w.safetensors")
    assert_same(read_pretrained(tmp_path / "w.safetensors").state, state)


def test_a_missing_file(tmp_path):
    assert (refusal(read_pretrained, tmp_path / "nope.pt")
            == f"{tmp_path / 'nope.pt'}: weights file not found; check --pretrained-path")


def test_a_damaged_file(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not a torch file")
    assert refusal(read_pretrained, tmp_path / "w.pt") == (
        f"{tmp_path / 'w.pt'}: cannot read the weights (corrupt, truncated or not a PyTorch file); pass a clf "
        "checkpoint, a state dict saved with torch.save, or a .safetensors file")


def test_pickled_objects_are_not_loaded(tmp_path):
    torch.save({"net": cnn()}, tmp_path / "w.pt")
    assert refusal(read_pretrained, tmp_path / "w.pt") == (
        f"{tmp_path / 'w.pt'}: holds pickled Python objects, which are not loaded for safety; save the weights alone "
        "(torch.save(model.state_dict(), FILE)) and pass that file")


def test_a_file_without_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "w.pt")
    assert refusal(read_pretrained, tmp_path / "w.pt") == (
        f"{tmp_path / 'w.pt'}: holds no state dict (a mapping of names to tensors); pass a clf checkpoint or the file "
        "of torch.save(model.state_dict(), FILE)")


def test_a_damaged_safetensors_file(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 4)
    assert refusal(read_pretrained, tmp_path / "w.safetensors").startswith(
        f"{tmp_path / 'w.safetensors'}: cannot read the safetensors file (")


def test_a_clf_checkpoint_of_another_arch_names_both(tmp_path):
    weights = read_pretrained(write_checkpoint(tmp_path / "best.pt", arch="resnet18"))
    assert refusal(weights.design_kwargs, "cnn") == (
        f"{tmp_path / 'best.pt'}: was trained as arch 'resnet18', not 'cnn'; use --arch resnet18")


# ---------------------------------------------------------------- loading


def test_another_class_count_reinitialises_the_head_and_loads_the_rest(tmp_path, caplog):
    source = cnn(4).state_dict()
    torch.save(source, tmp_path / "w.pt")
    model = cnn(3)
    fresh_head = model.head[2].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="clf"):
        load_pretrained(model, "cnn", read_pretrained(tmp_path / "w.pt"))
    assert_same(body(model.state_dict()), body(source))
    assert torch.equal(model.head[2].weight, fresh_head)
    assert caplog.messages == [
        f"{tmp_path / 'w.pt'}: weights loaded; classifier head re-initialised for 3 classes (the file's has 4)"]


def test_the_same_class_count_keeps_the_head(tmp_path, caplog):
    source = cnn(4).state_dict()
    torch.save(source, tmp_path / "w.pt")
    model = create_model("cnn", 4, img_size=32)
    with caplog.at_level(logging.INFO, logger="clf"):
        load_pretrained(model, "cnn", read_pretrained(tmp_path / "w.pt"))
    assert_same(model.state_dict(), source)
    assert caplog.messages == [f"{tmp_path / 'w.pt'}: weights loaded; classifier head kept (4 classes)"]


def test_a_backbone_without_head_loads_with_a_new_head(tmp_path, caplog):
    torch.save(body(cnn(4).state_dict()), tmp_path / "w.pt")
    with caplog.at_level(logging.INFO, logger="clf"):
        load_pretrained(cnn(3), "cnn", read_pretrained(tmp_path / "w.pt"))
    assert caplog.messages == [
        f"{tmp_path / 'w.pt'}: weights loaded; classifier head re-initialised (the file has none)"]


def test_ddp_prefixes_are_stripped(tmp_path):
    source = cnn(4).state_dict()
    torch.save({f"module.{k}": v for k, v in source.items()}, tmp_path / "w.pt")
    model = cnn(4)
    load_pretrained(model, "cnn", read_pretrained(tmp_path / "w.pt"))
    assert_same(model.state_dict(), source)


def test_a_body_of_another_shape_names_the_first_key(tmp_path):
    torch.save(cnn(4, width=8).state_dict(), tmp_path / "w.pt")
    assert refusal(load_pretrained, cnn(3), "cnn", read_pretrained(tmp_path / "w.pt")) == (
        f"{tmp_path / 'w.pt'}: weights do not fit arch 'cnn' ('features.0.0.weight' is [8, 3, 3, 3] in the file, "
        "[16, 3, 3, 3] in the model); pass the --arch the weights were trained with")


def test_another_arch_names_the_first_missing_key(tmp_path):
    torch.save(create_model("resnet18", 4).state_dict(), tmp_path / "w.pt")
    assert refusal(load_pretrained, cnn(3), "cnn", read_pretrained(tmp_path / "w.pt")) == (
        f"{tmp_path / 'w.pt'}: weights do not fit arch 'cnn' ('features.0.0.weight' is missing from the file); "
        "pass the --arch the weights were trained with")


def test_an_extra_key_is_named(tmp_path):
    torch.save({**cnn(4).state_dict(), "extra.weight": torch.zeros(2)}, tmp_path / "w.pt")
    assert refusal(load_pretrained, cnn(3), "cnn", read_pretrained(tmp_path / "w.pt")) == (
        f"{tmp_path / 'w.pt'}: weights do not fit arch 'cnn' (the file's 'extra.weight' is not in the model); "
        "pass the --arch the weights were trained with")


def test_a_clf_checkpoint_at_another_size_says_which(tmp_path):
    """A fixed-size timm model's position embedding depends on the input size: the advice names the size to use."""
    path = write_checkpoint(tmp_path / "best.pt", arch="test_vit", img_size=64)
    weights = read_pretrained(path)
    model = create_model("test_vit", 3, img_size=96, **weights.design_kwargs("test_vit"))
    message = refusal(load_pretrained, model, "test_vit", weights, 96)
    assert message.startswith(f"{path}: weights do not fit arch 'test_vit' ('pos_embed' is [")
    assert message.endswith("; it was trained at 64 px; use --img-size 64")


def test_the_design_of_a_clf_checkpoint_builds_a_model_that_fits(tmp_path):
    """A cnn of the first design (width 32, one conv a block, a hidden layer): its design is rebuilt, not today's."""
    path = write_checkpoint(tmp_path / "best.pt", model_extra={"width": 32, "convs_per_block": 1, "hidden": 256})
    weights = read_pretrained(path)
    model = create_model("cnn", 2, img_size=32, **weights.design_kwargs("cnn"))
    load_pretrained(model, "cnn", weights)
    assert torch.equal(model.head[1].weight, weights.state["head.1.weight"])  # the hidden layer is kept




@pytest.mark.parametrize("classes, why", [
    (["circle", "square", "star", "triangle"], None),
    (["circle", "square", "star", "hexagon"], "the file's 'triangle' is not a class here"),
    (["square", "circle", "star", "triangle"], "the same names in another order"),
])
def test_a_clf_checkpoint_keeps_its_head_only_for_the_same_classes_in_the_same_order(tmp_path, caplog, classes, why):
    """Same class count, other names or order: the file's head would start every logit on the wrong class."""
    path = write_checkpoint(tmp_path / "best.pt")  # classes circle, square, star, triangle
    weights = read_pretrained(path)
    model = create_model("cnn", 4, img_size=32, **weights.design_kwargs("cnn"))
    fresh_head = model.head[2].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="clf"):
        load_pretrained(model, "cnn", weights, classes=classes)
    assert_same(body(model.state_dict()), body(weights.state))
    if why is None:
        assert torch.equal(model.head[2].weight, weights.state["head.2.weight"])
        assert caplog.messages == [f"{path}: weights loaded; classifier head kept (4 classes)"]
    else:
        assert torch.equal(model.head[2].weight, fresh_head)
        assert caplog.messages == [
            f"{path}: weights loaded; classifier head re-initialised: the file's classes are not this data's ({why})"]

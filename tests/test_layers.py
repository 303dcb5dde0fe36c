"""clf.models.layers: the classifier head and the layer of every parameter, for the own archs and timm's."""

from __future__ import annotations

import pytest
from torch import nn

from clf.models.layers import body_norm_layers, classifier_prefixes, head_parameter_names, in_prefixes, layer_ids
from clf.models.registry import create_model


@pytest.fixture(scope="module")
def models():
    return {arch: create_model(arch, 3, img_size=64) for arch in ("cnn", "alexnet", "resnet18")}


def test_the_classifier_is_the_last_linear_layer(models):
    assert classifier_prefixes(models["cnn"], "cnn") == ("head.2",)
    assert classifier_prefixes(models["alexnet"], "alexnet") == ("classifier.6",)
    assert classifier_prefixes(models["resnet18"], "resnet18") == ("fc",)


def test_the_cnn_of_the_first_design_has_its_classifier_after_the_hidden_layer():
    model = create_model("cnn", 3, width=32, convs_per_block=1, hidden=256)
    assert classifier_prefixes(model, "cnn") == ("head.4",)


def test_in_prefixes_matches_whole_module_names():
    assert in_prefixes("head.2.weight", ("head.2",)) and not in_prefixes("head.20.weight", ("head.2",))


def test_the_cnn_layers_are_its_four_blocks_then_the_head(models):
    ids = layer_ids(models["cnn"], "cnn")
    assert ids["features.0.0.weight"] == 0 and ids["features.3.4.bias"] == 3 and ids["head.2.weight"] == 4
    assert sorted(set(ids.values())) == [0, 1, 2, 3, 4]


def test_the_alexnet_layers_are_its_five_convolutions_then_the_classifier(models):
    ids = layer_ids(models["alexnet"], "alexnet")
    assert [ids[f"features.{i}.weight"] for i in (0, 3, 6, 8, 10)] == [0, 1, 2, 3, 4]
    assert {ids[f"classifier.{i}.weight"] for i in (1, 4, 6)} == {5}


def test_timm_layers_follow_its_group_matcher(models):
    """resnet18: the stem, each of the 8 blocks, then the unmatched head (fc), as timm's layer decay groups them."""
    ids = layer_ids(models["resnet18"], "resnet18")
    assert ids["conv1.weight"] == 0 and ids["bn1.weight"] == 0
    assert ids["layer1.0.conv1.weight"] == 1 and ids["layer4.1.bn2.bias"] == 8 and ids["fc.weight"] == 9


def test_the_head_parameters_are_the_top_layer(models):
    assert head_parameter_names(models["cnn"], "cnn") == {"head.2.weight", "head.2.bias"}
    assert head_parameter_names(models["resnet18"], "resnet18") == {"fc.weight", "fc.bias"}


def test_the_body_norms_are_every_batchnorm_below_the_head(models):
    norms = body_norm_layers(models["cnn"], "cnn")
    assert len(norms) == 8 and all(isinstance(n, nn.BatchNorm2d) for n in norms)  # 4 blocks x 2 convs
    assert body_norm_layers(models["alexnet"], "alexnet") == []

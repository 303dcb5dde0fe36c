"""clf.report's parts: the Grad-CAM layer choice and maps, the mistakes order, reliability around a temperature."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from torch import nn

from clf.config import Preprocess
from clf.models.registry import create_model
from clf.probabilities import expected_calibration_error, sigmoid, softmax
from clf.report.evaluation import reliability_curves, worst_mistakes
from clf.report.evaluation_multilabel import worst_tagged
from clf.report.gradcam import CamModel, grad_cams, target_layer
from clf.report.images import thumbnail
from clf.report.plots import plain_text


def test_the_last_conv_stage_of_cnns_is_the_target_and_attention_models_have_none():
    cnn = create_model("cnn", num_classes=3, img_size=32)
    name, layer = target_layer(cnn)
    assert isinstance(layer, nn.Conv2d) and name == [n for n, m in cnn.named_modules() if isinstance(m, nn.Conv2d)][-1]
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert target_layer(resnet)[0] == "layer4.1.conv2"
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)
    assert target_layer(vit) is None  # its one convolution is the patch embedding, attention follows


def test_grad_cam_maps_are_normalised_and_follow_the_target_class():
    model = create_model("cnn", num_classes=3, img_size=32).eval()
    name, layer = target_layer(model)
    images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(2)]
    pre = Preprocess(size=(32, 32))
    maps = grad_cams(CamModel(model, layer, name), images, [0, 2], pre)
    assert len(maps) == 2
    for heat in maps:
        assert heat.ndim == 2 and heat.min() >= 0 and heat.max() <= 1.0 + 1e-6
    other = grad_cams(CamModel(model, layer, name), images[:1], [1], pre)[0]
    assert not np.allclose(maps[0], other)  # another class, another map


def test_worst_mistakes_are_wrong_predictions_by_falling_loss_with_the_top_classes():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.05, 0.15, 0.8]])
    y_true = np.array([0, 0, 1, 0])
    mistakes = worst_mistakes(["a", "b", "c", "d"], probs, y_true)
    assert [m.path for m in mistakes] == ["d", "b", "c"]  # p(true) 0.05, 0.1, 0.4
    assert mistakes[0].predicted == 2 and mistakes[0].confidence == pytest.approx(0.8)
    assert mistakes[0].loss == pytest.approx(-np.log(0.05))
    assert mistakes[0].top == [(2, pytest.approx(0.8)), (1, pytest.approx(0.15)), (0, pytest.approx(0.05))]


def test_worst_tagged_images_are_those_with_a_tag_wrong_by_falling_cross_entropy_with_the_worst_wrong_tag():
    logits = np.array([[2.0, -2.0, -2.0], [-1.0, 0.5, 3.0], [0.2, -3.0, 1.0]])
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], bool)
    thresholds = np.array([0.5, 0.7, 0.5])
    probs = sigmoid(logits, np.float64)
    mistakes = worst_tagged(["a", "b", "c"], logits, truth, thresholds, probs >= thresholds)
    assert [m.path for m in mistakes] == ["b", "c"]  # a is right on every tag
    b, c = mistakes
    assert (b.true, b.predicted, b.missed, b.wrong) == ([0, 1], [2], [0, 1], [2])  # 0.62 < its threshold 0.7: missed
    assert b.cam_class == 2  # the false tag at p 0.95 costs more than the missed ones
    assert (c.missed, c.wrong, c.cam_class) == ([], [0], 0)
    bce = -(truth * np.log(probs) + (~truth) * np.log(1 - probs)).mean(axis=1)
    assert [b.loss, c.loss] == pytest.approx([bce[1], bce[2]])
    assert b.top == [(2, pytest.approx(probs[1, 2]), 0.5), (1, pytest.approx(probs[1, 1]), 0.7),
                     (0, pytest.approx(probs[1, 0]), 0.5)]


def test_reliability_before_the_baked_temperature_undoes_it():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (200, 4)).astype(np.float32)  # what the calibrated graph outputs: logits / T
    y_true = rng.integers(0, 4, 200)
    before, after = reliability_curves(logits, y_true, temperature=2.0)
    assert before.label == "before temperature 2" and after.label == "after temperature 2"
    assert before.ece == pytest.approx(expected_calibration_error(softmax(logits * 2.0), y_true))
    assert after.ece == pytest.approx(expected_calibration_error(softmax(logits), y_true))
    assert sum(count for _, _, count in after.bins) == 200
    (plain,) = reliability_curves(logits, y_true, temperature=None)
    assert plain.label == "model" and plain.ece == pytest.approx(after.ece)


def test_thumbnails_shrink_only_and_user_text_is_not_mathtext():
    assert thumbnail(np.zeros((448, 224, 3), np.uint8)).shape == (112, 56, 3)
    assert thumbnail(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32, 3)
    assert plain_text("run $x$") == r"run \$x\$"

"""SimpleCNN: layout, output shapes at the sizes clf trains at, the 16 px minimum, argument checks."""

import pytest
import torch
from torch import nn

from clf.models.cnn import CNN_DESIGN, CNN_DESIGN_V1, MIN_INPUT_SIZE, SimpleCNN


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # conftest already pins torch to one thread


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (64, 64), (32, 48), (65, 33)])
def test_output_shape_at_any_size_from_16(size):
    model = SimpleCNN(num_classes=5, width=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5)
    assert out.dtype == torch.float32


def test_below_minimum_size_fails():
    # 15 -> 7 -> 3 -> 1 -> 0: the fourth pool has nothing left.
    assert MIN_INPUT_SIZE == 16
    model = SimpleCNN(num_classes=2, width=4).eval()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 15, 15))


def test_layout_default_design_two_convs_per_block_and_a_linear_head():
    model = SimpleCNN(num_classes=7, width=8)
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 8, (3, 3), (1, 1)),
        (8, 8, (3, 3), (1, 1)),
        (8, 16, (3, 3), (1, 1)),
        (16, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
        (64, 64, (3, 3), (1, 1)),
    ]
    conv_bn_relu = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    for block in model.features:
        assert [type(m) for m in block] == [*conv_bn_relu, *conv_bn_relu, nn.MaxPool2d]
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert [type(m) for m in model.head] == [nn.Flatten, nn.Dropout, nn.Linear]
    assert (model.head[2].in_features, model.head[2].out_features) == (64, 7)
    assert model.head[1].p == 0.3
    assert model.num_classes == 7


def test_layout_version_1_design_one_conv_per_block_and_two_dense_layers():
    model = SimpleCNN(num_classes=7, **{**CNN_DESIGN_V1, "width": 8})
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16), (16, 32), (32, 64)]
    for block in model.features:
        assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 256), (256, 7)]
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.3]
    # The state-dict keys of checkpoints written before the design was recorded (version < 3).
    assert [k for k in model.state_dict() if k.endswith("weight")] == [
        "features.0.0.weight", "features.0.1.weight", "features.1.0.weight", "features.1.1.weight",
        "features.2.0.weight", "features.2.1.weight", "features.3.0.weight", "features.3.1.weight",
        "head.1.weight", "head.4.weight",
    ]


def test_defaults_are_the_recorded_design():
    model = SimpleCNN(num_classes=3)
    assert CNN_DESIGN == {"width": 16, "convs_per_block": 2, "hidden": 0}
    assert model.features[-1][0].out_channels == 8 * 16
    assert model.head[-1].in_features == 128


def test_in_chans():
    model = SimpleCNN(num_classes=3, in_chans=1, width=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_eval_is_deterministic_and_train_mode_uses_dropout():
    model = SimpleCNN(num_classes=3, width=4, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_backward_reaches_every_parameter():
    model = SimpleCNN(num_classes=3, width=4)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes, in_chans and width must be >= 1, got 0, 3, 16"),
        ({"num_classes": 2, "width": 0}, "num_classes, in_chans and width must be >= 1, got 2, 3, 0"),
        ({"num_classes": 2, "dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"num_classes": 2, "convs_per_block": 0}, "convs_per_block must be >= 1 and hidden >= 0, got 0, 0"),
        ({"num_classes": 2, "hidden": -1}, "convs_per_block must be >= 1 and hidden >= 0, got 2, -1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        SimpleCNN(**kwargs)
    assert str(info.value) == message

"""Parameter and FLOP counts on modules small enough to count by hand."""

import pytest
import torch
from torch import nn

from clf.models.cnn import SimpleCNN
from clf.models.summary import count_flops, count_parameters, eval_mode, zeros_input


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # conftest already pins torch to one thread


def test_count_parameters_linear():
    assert count_parameters(nn.Linear(10, 5)) == 10 * 5 + 5


def test_count_parameters_includes_frozen_and_counts_shared_once():
    shared = nn.Linear(4, 4)  # 20
    frozen = nn.Linear(4, 2)  # 10
    frozen.requires_grad_(False)
    model = nn.Sequential(shared, nn.BatchNorm1d(4), shared, frozen)  # BN: 8 params (+ buffers, not counted)
    assert count_parameters(model) == 20 + 8 + 10


def test_count_parameters_simple_cnn_by_hand():
    # Two conv3x3 (no bias) + BN(2c) per block, then the 64->3 linear classifier.
    blocks = ((3 * 8 * 9 + 16) + (8 * 8 * 9 + 16) + (8 * 16 * 9 + 32) + (16 * 16 * 9 + 32)
              + (16 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + (32 * 64 * 9 + 128) + (64 * 64 * 9 + 128))
    head = 64 * 3 + 3
    assert count_parameters(SimpleCNN(num_classes=3, width=8)) == blocks + head == 74043


def test_count_flops_linear_on_last_dim():
    # Input (1, 3, 8, 8): the Linear sees 24 rows of 8 features; 2 FLOPs per multiply-add.
    assert count_flops(nn.Linear(8, 4), 8) == 2 * 24 * 8 * 4


def test_count_flops_conv_square_and_rectangular():
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, 8) == 2 * (8 * 8) * 4 * (3 * 3 * 3)
    assert count_flops(conv, (4, 8)) == 2 * (4 * 8) * 4 * (3 * 3 * 3)
    assert count_flops(nn.Conv2d(1, 2, 1, bias=False), 4, in_chans=1) == 2 * 16 * 2


def test_count_flops_restores_mode_and_keeps_no_graph():
    model = SimpleCNN(num_classes=3, width=4)
    model.train()
    flops = count_flops(model, 32)
    assert model.training is True
    assert all(p.grad is None for p in model.parameters())
    # Convolutions dominate: 4x the pixels gives nearly 4x the FLOPs (the dense head does not grow).
    assert 3.8 < count_flops(model, 64) / flops < 4.0
    model.eval()
    count_flops(model, 32)
    assert model.training is False


def test_count_flops_simple_cnn_by_hand():
    model = SimpleCNN(num_classes=3, width=4)
    convs = 2 * (32 * 32 * 4 * 3 * 9 + 32 * 32 * 4 * 4 * 9 + 16 * 16 * 8 * 4 * 9 + 16 * 16 * 8 * 8 * 9
                 + 8 * 8 * 16 * 8 * 9 + 8 * 8 * 16 * 16 * 9 + 4 * 4 * 32 * 16 * 9 + 4 * 4 * 32 * 32 * 9)
    dense = 2 * 32 * 3
    assert count_flops(model, 32) == convs + dense


def test_count_flops_follows_parameter_dtype():
    assert count_flops(nn.Linear(8, 2).double(), 8) == 2 * 24 * 8 * 2


def test_zeros_input_follows_the_models_dtype_and_defaults_to_float32():
    assert zeros_input(nn.Linear(2, 2).double(), 4, 6).dtype == torch.float64
    x = zeros_input(nn.Identity(), 4, 6, batch=2)  # no parameters: CPU float32
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32 and x.device.type == "cpu" and not x.any()


def test_eval_mode_restores_the_mode_even_after_an_error():
    model = nn.Dropout(0.5)
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training and not torch.is_grad_enabled()
        raise RuntimeError("shape error")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training

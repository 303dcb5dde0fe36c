"""Log-loss and expected calibration error against hand computations."""

import math

import numpy as np
import pytest

from clf.probabilities import expected_calibration_error, log_loss


def test_log_loss_is_the_mean_negative_log_of_the_true_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert log_loss(probs, [0, 1, 1]) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)


def test_log_loss_renormalises_rows_and_clips_a_certain_mistake():
    assert log_loss(np.array([[2.0, 2.0]]), [0]) == pytest.approx(math.log(2))
    assert log_loss(np.array([[1.0, 0.0]]), [1]) == pytest.approx(-math.log(1e-15))


def test_ece_weights_each_bin_by_its_share():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # confidences 0.9, 0.8, 0.6 in three bins; the last wrong
    assert expected_calibration_error(probs, [0, 1, 1]) == pytest.approx((0.1 + 0.2 + 0.6) / 3)


def test_ece_of_a_calibrated_bin_is_zero():
    probs = np.array([[0.75, 0.25]] * 4)  # 75 % confident, 3 of 4 right
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.0)


@pytest.mark.parametrize("metric", [log_loss, expected_calibration_error])
def test_shape_mismatches_are_refused(metric):
    with pytest.raises(ValueError):
        metric(np.array([[0.5, 0.5]]), [0, 1])
    with pytest.raises(ValueError):
        metric(np.zeros((0, 2)), [])


def test_sigmoid_and_log_sigmoid_are_stable_and_match_the_definition():
    from clf.probabilities import log_sigmoid, logit, sigmoid

    x = np.array([-1000.0, -20.0, -1.0, 0.0, 1.0, 20.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise"):
        p = sigmoid(x)
        lp = log_sigmoid(x)
    np.testing.assert_allclose(p[1:-1], 1 / (1 + np.exp(-x[1:-1].astype(np.float64))), rtol=1e-6)
    assert p[0] == 0.0 and p[-1] == 1.0
    assert np.isfinite(lp).all() and lp[0] == pytest.approx(-1000.0) and lp[-1] == pytest.approx(0.0)
    np.testing.assert_allclose(logit(sigmoid(x[2:-2])), x[2:-2], rtol=1e-3, atol=1e-3)

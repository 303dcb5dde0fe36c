"""clf.train.class_weights: the rules by hand on a 3-class toy, and the weights file's one-line refusals."""

from __future__ import annotations

import pytest

from clf.errors import ClfError
from clf.train.class_weights import auto_weights, effective_weights, read_weights_file, resolve_class_weights

CLASSES = ["a", "b", "c"]
LABELS = [0] * 6 + [1] * 3 + [2] * 1  # n = (6, 3, 1), N = 10, C = 3


def test_auto_is_n_over_c_times_the_class_count():
    assert resolve_class_weights("auto", CLASSES, LABELS) == pytest.approx((10 / 18, 10 / 9, 10 / 3))
    assert auto_weights([6, 3, 1]) == pytest.approx((10 / 18, 10 / 9, 10 / 3))


def test_effective_is_the_effective_number_rule_with_mean_one_over_the_training_samples():
    beta = 0.999
    raw = [(1 - beta) / (1 - beta**n) for n in (6, 3, 1)]
    scale = 10 / (6 * raw[0] + 3 * raw[1] + 1 * raw[2])
    weights = resolve_class_weights("effective", CLASSES, LABELS)
    assert weights == pytest.approx(tuple(w * scale for w in raw), rel=1e-12)
    assert sum(n * w for n, w in zip((6, 3, 1), weights)) / 10 == pytest.approx(1.0, rel=1e-12)
    assert weights[0] < weights[1] < weights[2]  # the rarer, the heavier
    # with beta near 1 the rule tends to auto's 1 / n_c (Cui et al.): close to it on a toy this small
    assert effective_weights([6, 3, 1]) == pytest.approx(auto_weights([6, 3, 1]), rel=0.01)


def test_auto_meets_the_same_mean_one_rule():
    weights = auto_weights([6, 3, 1])
    assert sum(n * w for n, w in zip((6, 3, 1), weights)) / 10 == pytest.approx(1.0, rel=1e-12)


def test_none_is_unweighted():
    assert resolve_class_weights(None, CLASSES, LABELS) is None


@pytest.mark.parametrize("spec", ["auto", "effective"])
def test_a_rule_refuses_a_class_without_training_images(spec):
    with pytest.raises(ClfError) as error:
        resolve_class_weights(spec, CLASSES, [0, 0, 1])
    assert str(error.value) == (f"--class-weights {spec}: class 'c' has no training images in this split, so it has "
                                "no weight; give its weights in a CSV file (class,weight) or leave --class-weights out")


def test_a_weights_file_gives_every_class_its_weight_in_class_order(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("class,weight\nc,3\na, 0.5\n\nb,1e0\n")
    assert read_weights_file(path, CLASSES) == (0.5, 1.0, 3.0)
    assert resolve_class_weights(str(path), CLASSES, LABELS) == (0.5, 1.0, 3.0)


@pytest.mark.parametrize(("text", "problem"), [
    ("class,weight\na,1\nb,1\n", "class 'c' has no weight; give every class of the data once (a, b, c)"),
    ("class,weight\na,1\nb,1\nc,1\nd,1\n", "class 'd' is not a class of the data (a, b, c); fix its name or remove "
                                          "the line"),
    ("class,weight\na,1\nb,1\nc,1\na,2\n", "class 'a' is given twice; give every class once"),
    ("class,weight\na,1\nb,-1\nc,1\n", "the weight of class 'b' must be a positive finite number, got -1"),
    ("class,weight\na,1\nb,0\nc,1\n", "the weight of class 'b' must be a positive finite number, got 0"),
    ("class,weight\na,1\nb,nan\nc,1\n", "the weight of class 'b' must be a positive finite number, got nan"),
    ("class,weight\na,1\nb,inf\nc,1\n", "the weight of class 'b' must be a positive finite number, got inf"),
    ("class,weight\na,1\nb,heavy\nc,1\n", "the weight of class 'b' is 'heavy', not a number; give a positive number"),
    ("label,w\na,1\n", "the first line must be the header class,weight, got label,w"),
    ("", "the first line must be the header class,weight, got nothing"),
    ("class,weight\na,1,2\n", "the row 'a,1,2' has 3 cells; give class,weight"),
])
def test_a_bad_weights_file_is_one_line_naming_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "w.csv"
    path.write_text(text)
    with pytest.raises(ClfError) as error:
        read_weights_file(path, CLASSES)
    assert str(error.value) == f"{path}: {problem}"


def test_a_missing_or_unreadable_weights_file_is_one_line(tmp_path):
    with pytest.raises(ClfError) as error:
        read_weights_file(tmp_path / "nope.csv", CLASSES)
    assert str(error.value) == (f"{tmp_path / 'nope.csv'}: class weights file not found; give auto, effective or a "
                                "CSV file of class,weight")
    with pytest.raises(ClfError) as error:
        read_weights_file(tmp_path, CLASSES)
    assert str(error.value) == (f"{tmp_path}: cannot read the class weights file (Is a directory); give a CSV file "
                                "of class,weight")

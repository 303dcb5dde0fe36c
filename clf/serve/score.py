"""The job behind `clf score`: a submission's accuracy against the answers, the competition's metric (--metric,
clf/metrics.py), and with the probabilities CSV of `clf infer --probs` its log-loss and expected calibration error,
with the same CSV rules as every other reader (clf.data.csv_table)."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clf.config import check_columns
from clf.data.csv_table import CsvTable, read_csv_table
from clf.errors import ClfError, DataError
from clf.metrics import check_ordered_classes
from clf.metrics import metric as competition_metric
from clf.metrics import score as competition_score
from clf.probabilities import ECE_BINS, expected_calibration_error, log_loss

logger = logging.getLogger(__name__)

_SHOWN = 5  # ids named in a message before "..."
_PROBS_HINT = "give the CSV `clf infer --probs` wrote (an id column, then one probability column per class)"


@dataclass(frozen=True)
class ScoreResult:
    """accuracy over the answers' rows; `extra`: submission ids the answers do not have (ignored, warned);
    log_loss and ece (over `ece_bins` bins): from the probabilities CSV over the answers' rows, None without one."""

    accuracy: float
    rows: int
    extra: list[str]
    log_loss: float | None = None
    ece: float | None = None
    ece_bins: int = ECE_BINS
    metric: str = "accuracy"  # the competition's metric (--metric) and its value
    metric_value: float | None = None


def score_submission(submission: str | Path, answers: str | Path, id_col: str = "id",
                     label_col: str = "label", probs: str | Path | None = None, metric: str = "accuracy"
                     ) -> ScoreResult:
    """Accuracy of a submission CSV against an answers CSV (same id/label columns; ids and labels stripped), and
    with `probs` (the CSV `clf infer --probs` writes) the log-loss and ECE of those probabilities.

    Every id of the answers needs a prediction (and a row of probabilities). An id of the submission that the
    answers do not have is left out of the score with a WARNING naming how many (a submission for a larger test
    set scores on the answers given). Probability rows are rescaled to sum to 1 before scoring, as Kaggle does.

    Raises:
        ClfError: --id-col or --label-col empty, or the same column.
        DataError: the submission is the answers file, an answer without a label, a missing/unreadable/non-UTF-8/empty
            file, a missing column, an id listed twice in either file
            (it would silently change the accuracy), an id of the answers with no prediction; for `probs`: an id of
            the answers without probabilities, no column for a class of the answers, a value that is no finite
            number >= 0, a row without any probability > 0.
    """
    check_columns(id_col, label_col)
    chosen = competition_metric(metric)
    if chosen.needs_probabilities and probs is None:
        raise ClfError(f"--metric {metric} needs the probabilities: pass --probs PROBS.csv (what clf infer --probs "
                       "writes)")
    if same_file(submission, answers):
        raise DataError(f"{submission}: is also the answers file; score a submission against other answers")
    predicted = read_labels(submission, id_col, label_col)
    truth = read_labels(answers, id_col, label_col)
    unlabelled = [i for i, label in truth.items() if not label]
    if unlabelled:  # it would count as wrong (or as right against an empty prediction): never a real score
        shown = ", ".join(unlabelled[:_SHOWN]) + (", ..." if len(unlabelled) > _SHOWN else "")
        raise DataError(f"{answers}: {len(unlabelled)} ids have an empty '{label_col}' ({shown}); "
                        "fill in their labels or drop those rows")
    extra = check_every_answer_predicted(submission, answers, predicted, truth)
    correct = sum(predicted[i] == label for i, label in truth.items())
    value = None if chosen.needs_probabilities else _label_metric(metric, truth, predicted)
    if probs is None:
        return ScoreResult(correct / len(truth), len(truth), extra, metric=metric, metric_value=value)
    matrix, y_true = probabilities_for(probs, truth, answers, id_col, predicted_classes=set(predicted.values()))
    if chosen.needs_probabilities:
        value = competition_score(metric, *_answered_columns(metric, y_true, matrix))
    return ScoreResult(correct / len(truth), len(truth), extra, log_loss(matrix, y_true),
                       expected_calibration_error(matrix, y_true, ECE_BINS), metric=metric, metric_value=value)


def _answered_columns(metric: str, y_true: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For roc_auc, the probability columns of the classes the answers hold (a model class nobody has would make
    every one-vs-rest AUC of it undefined); the other metrics take every column."""
    if metric != "roc_auc":
        return y_true, matrix
    kept = np.unique(y_true)
    remap = np.full(matrix.shape[1], -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return remap[y_true], matrix[:, kept]


def _label_metric(metric: str, truth: dict[str, str], predicted: dict[str, str]) -> float:
    """A metric of the submission's labels against the answers' (the classes: every label either file names)."""
    classes = sorted(set(truth.values()) | {predicted[i] for i in truth})
    check_ordered_classes(metric, classes)
    index = {name: k for k, name in enumerate(classes)}
    y_true = np.array([index[label] for label in truth.values()], dtype=np.int64)
    one_hot = np.eye(len(classes))[[index[predicted[i]] for i in truth]]
    return competition_score(metric, y_true, one_hot, classes)


def probabilities_for(probs: str | Path, truth: dict[str, str], answers: str | Path, id_col: str,
                      predicted_classes: Collection[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities of the answers' ids, float64 [N, C] in the answers' order with each row rescaled to sum
    to 1, and each true class's column.

    The header is checked against the answers' classes before any value is read: a submission or answers file
    given as --probs is named as the wrong file, not as a column of non-numbers. A column that is no class of the
    answers or of `predicted_classes` (the submission's labels) may be a class of the model that nobody has; it is
    taken as one only when it changes nothing (every value 0) or every row sums to 1 with it, as `clf infer --probs`
    writes them: otherwise the rows would be rescaled by a column that holds something else.

    Raises:
        DataError: as read_csv_table, no id column or no class column, a class of the answers with no column, an id
            listed twice, a value that is not a finite number >= 0 (naming the line and column), a row whose
            probabilities are all 0, an id of the answers with no row, a column that is no class (above).
    """
    table = read_csv_table(probs)
    id_at = table.column(id_col, "set the id column with --id-col")
    class_at = [c for c in range(len(table.header)) if c != id_at]
    classes = [table.header[c] for c in class_at]
    if not classes:
        raise DataError(f"{probs}: only the id column '{id_col}', no class column; {_PROBS_HINT}")
    column = {name: k for k, name in enumerate(classes)}
    missing_classes = sorted({label for label in truth.values() if label not in column})
    if missing_classes:
        noun = "class" if len(missing_classes) == 1 else "classes"
        raise DataError(f"{probs}: no column for the {noun} {_some(missing_classes, quote=True)} of {answers} "
                        f"(columns: {', '.join(classes)}); {_PROBS_HINT}")
    rows = _probability_rows(table, id_at, class_at)
    known = set(truth.values()) | set(predicted_classes)
    _refuse_non_class_columns(table, rows, classes, [c for c in classes if c not in known], sorted(known), answers)
    missing = [i for i in truth if i not in rows]
    if missing:
        raise DataError(f"{probs}: {len(missing)} ids of {answers} have no probabilities ({_some(missing)}); "
                        "give the --probs file of the same `clf infer` run as the submission")
    matrix = np.array([rows[i] for i in truth], dtype=np.float64)
    matrix /= matrix.sum(axis=1, keepdims=True)  # rescaled as Kaggle does: the ECE's confidences too
    return matrix, np.array([column[label] for label in truth.values()], dtype=np.int64)


def _probability_rows(table: CsvTable, id_at: int, class_at: list[int]) -> dict[str, list[float]]:
    """{id: the row's values in class_at order}, every value a finite number >= 0 and some > 0, ids unique."""
    rows: dict[str, list[float]] = {}
    for line, row, image_id in zip(table.lines, table.rows, table.unique_ids(id_at)):
        values = [_probability(table, line, c, row[c]) for c in class_at]
        if not sum(values) > 0:  # nothing to rescale: every class would get 0/0
            raise DataError(f"{table.path}: line {line}: every probability of id '{image_id}' is 0; {_PROBS_HINT}")
        rows[image_id] = values
    return rows


def sum_tolerance(classes: int) -> float:
    """How far from 1 a row of `clf infer --probs` may sum: each value is written with 6 significant digits."""
    return 1e-4 + 1e-6 * classes


def _refuse_non_class_columns(table: CsvTable, rows: dict[str, list[float]], classes: list[str], unknown: list[str],
                              known: list[str], answers: str | Path) -> None:
    """Columns that are no class of the answers or the submission: refused unless all 0 or part of rows summing to 1.

    Raises:
        DataError: naming the columns, the first line that does not sum to 1 with them, and the classes expected.
    """
    at = [classes.index(name) for name in unknown]
    if not any(values[k] > 0 for values in rows.values() for k in at):
        return  # all 0 (a class nobody has, or nothing): the rescaled rows are the same
    tolerance = sum_tolerance(len(classes))
    for line, (image_id, values) in zip(table.lines, rows.items()):
        total = math.fsum(values)
        if abs(total - 1) > tolerance:
            names = ", ".join(f"'{name}'" for name in unknown)
            it = "it" if len(unknown) == 1 else "them"
            noun = "column" if len(unknown) == 1 else "columns"
            raise DataError(f"{table.path}: {noun} {names} {'is' if it == 'it' else 'are'} no class of {answers} or of "
                            f"the submission, and line {line} (id '{image_id}') sums to {total:.6g} with {it}, not "
                            f"1: the rows would be rescaled by {it}; drop {it} (an id column, then one probability "
                            f"column per class: {_some(known)})")


def _probability(table: CsvTable, line: int, column: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise DataError(f"{table.path}: line {line}: column '{table.header[column]}' holds {text.strip()!r}, not a "
                        f"probability (a finite number >= 0); {_PROBS_HINT}")
    return value


def _some(items: list[str], quote: bool = False) -> str:
    shown = ", ".join(f"'{i}'" if quote else i for i in items[:_SHOWN])
    return shown + (", ..." if len(items) > _SHOWN else "")


def read_labels(path: str | Path, id_col: str, label_col: str) -> dict[str, str]:
    """{id: label} from a CSV with those columns.

    Raises:
        DataError: as read_csv_table, a missing column, or an id listed twice (naming both lines).
    """
    table = read_csv_table(path)
    hint = "set the column names with --id-col and --label-col"
    id_at, label_at = table.column(id_col, hint), table.column(label_col, hint)
    return {image_id: row[label_at].strip() for image_id, row in zip(table.unique_ids(id_at), table.rows)}


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False  # a missing file gets its own message from read_labels


def check_every_answer_predicted(submission: Path, answers: Path, predicted: Collection[str],
                                 truth: Collection[str]) -> list[str]:
    """The submission's ids that the answers do not hold (logged: not scored).

    Raises:
        DataError: an id of the answers without a prediction.
    """
    missing = [i for i in truth if i not in predicted]
    if missing:
        raise DataError(f"{submission}: {len(missing)} ids of {answers} have no prediction (e.g. {missing[0]})")
    extra = [i for i in predicted if i not in truth]
    if extra:
        shown = ", ".join(extra[:_SHOWN]) + (", ..." if len(extra) > _SHOWN else "")
        logger.warning("%s: %d ids are not in %s (%s); not scored", submission, len(extra), answers, shown)
    return extra

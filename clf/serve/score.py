"""The job behind `clf score`: a submission's accuracy against the answers, with the same CSV rules as every
other reader (clf.data.csv_table)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from clf.config import check_columns
from clf.data.csv_table import read_csv_table
from clf.errors import DataError

logger = logging.getLogger(__name__)

_SHOWN = 5  # ids named in a message before "..."


@dataclass(frozen=True)
class ScoreResult:
    """accuracy over the answers' rows; `extra`: submission ids the answers do not have (ignored, warned)."""

    accuracy: float
    rows: int
    extra: list[str]


def score_submission(submission: str | Path, answers: str | Path, id_col: str = "id",
                     label_col: str = "label") -> ScoreResult:
    """Accuracy of a submission CSV against an answers CSV (same id/label columns; ids and labels stripped).

    Every id of the answers needs a prediction. An id of the submission that the answers do not have is left
    out of the score with a WARNING naming how many (a submission for a larger test set scores on the answers
    given).

    Raises:
        ClfError: --id-col or --label-col empty, or the same column.
        DataError: the submission is the answers file, an answer without a label, a missing/unreadable/non-UTF-8/empty
            file, a missing column, an id listed twice in either file
            (it would silently change the accuracy), an id of the answers with no prediction.
    """
    check_columns(id_col, label_col)
    if _same_file(submission, answers):
        raise DataError(f"{submission}: is also the answers file; score a submission against other answers")
    predicted = read_labels(submission, id_col, label_col)
    truth = read_labels(answers, id_col, label_col)
    unlabelled = [i for i, label in truth.items() if not label]
    if unlabelled:  # it would count as wrong (or as right against an empty prediction): never a real score
        shown = ", ".join(unlabelled[:_SHOWN]) + (", ..." if len(unlabelled) > _SHOWN else "")
        raise DataError(f"{answers}: {len(unlabelled)} ids have an empty '{label_col}' ({shown}); "
                        "fill in their labels or drop those rows")
    missing = [i for i in truth if i not in predicted]
    if missing:
        raise DataError(f"{submission}: {len(missing)} ids of {answers} have no prediction (e.g. {missing[0]})")
    extra = [i for i in predicted if i not in truth]
    if extra:
        shown = ", ".join(extra[:_SHOWN]) + (", ..." if len(extra) > _SHOWN else "")
        logger.warning("%s: %d ids are not in %s (%s); not scored", submission, len(extra), answers, shown)
    correct = sum(predicted[i] == label for i, label in truth.items())
    return ScoreResult(correct / len(truth), len(truth), extra)


def read_labels(path: str | Path, id_col: str, label_col: str) -> dict[str, str]:
    """{id: label} from a CSV with those columns.

    Raises:
        DataError: as read_csv_table, a missing column, or an id listed twice (naming both lines).
    """
    table = read_csv_table(path)
    hint = "set the column names with --id-col and --label-col"
    id_at, label_at = table.column(id_col, hint), table.column(label_col, hint)
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in zip(table.lines, table.rows):
        image_id = row[id_at].strip()
        if image_id in first_line:
            raise DataError(f"{path}: line {line}: id '{image_id}' is listed twice (also line {first_line[image_id]}); "
                            "keep one row per id")
        first_line[image_id] = line
        labels[image_id] = row[label_at].strip()
    return labels


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False  # a missing file gets its own message from read_labels

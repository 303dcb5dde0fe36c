"""Errors users can act on: each carries one line naming the file and the problem, and one exit code.

Exit codes (README table), one meaning each:

    0   done
    1   a bug in clf (an unexpected exception; please report it with the traceback from --verbose)
    2   bad input, flag, model file, device or disk: nothing was done, or nothing already done was lost
    3   a gate failed (parity): the result was kept aside for inspection, the deployable path is untouched
    4   the job ran but its result is incomplete or unusable: `clf infer --strict` with skipped images (every other
        row written), no image of the folder readable, a training whose loss became NaN/inf (the last good
        checkpoint is kept). `clf train --strict` refuses a bad image before any training: that is exit 2.
    130 interrupted by Ctrl-C (SIGINT), 143 terminated (SIGTERM): the save in progress was finished first
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class ClfError(Exception):
    """A user-facing failure: bad input, missing file, unmet requirement.

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; no traceback.
    """

    exit_code = EXIT_BAD_INPUT
    # Under torchrun: raised by every rank together (rank 0's decision broadcast, or a set-up error the ranks agreed
    # on: clf.train.runtime). The ranks keep their process group and meet once more after printing it, so that the
    # first rank to exit cannot have torchrun's stop signal cut a slower sibling's line.
    every_rank = False


class SettingError(ClfError, ValueError):
    """A setting clf cannot use: a Preprocess field, a Predictor argument (the flags' own checks name the flag).

    Also a ValueError, as these were before they became ClfErrors, so that library callers catching that still do.
    """


class DataError(ClfError):
    """An image, folder or label file that cannot be used."""


class ModelError(ClfError):
    """An unknown architecture, unavailable weights, or a checkpoint that does not fit."""


class ParityError(ClfError):
    """The exported model's outputs differ from PyTorch's beyond tolerance.

    ``result`` is the export's ExportResult (the model kept aside, the parity report) when there is one.
    """

    exit_code = EXIT_GATE_FAILED

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class DeviceError(ClfError):
    """A requested device or execution provider is not available on this machine."""


class StorageError(ClfError):
    """An output that cannot be written: a full disk, a read-only folder, a name the filesystem refuses."""


class IncompleteError(ClfError):
    """The job ran but its result is incomplete or unusable (skipped images with --strict, a diverged training)."""

    exit_code = EXIT_INCOMPLETE


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's text (its type name when it has none), at most `limit` chars.

    The one way clf turns a foreign exception (OpenCV, onnxruntime, torch, onnx) into the reason part of a message.
    """
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a job scheduler sends), raised like Ctrl-C so that the same clean-up runs; exit 143."""

"""Errors users can act on: each carries one line naming the file and the problem."""


class ClfError(Exception):
    """A user-facing failure: bad input, missing file, unmet requirement.

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; no traceback.
    """

    exit_code = 2


class DataError(ClfError):
    """An image, folder or label file that cannot be used."""


class ModelError(ClfError):
    """An unknown architecture, unavailable weights, or a checkpoint that does not fit."""


class ParityError(ClfError):
    """The exported model's outputs differ from PyTorch's beyond tolerance.

    ``result`` is the export's ExportResult (the model kept aside, the parity report) when there is one.
    """

    exit_code = 3

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class DeviceError(ClfError):
    """A requested device or execution provider is not available on this machine."""

"""Errors the user can fix: each carries a one-line message saying what is wrong and where."""


class UserError(ValueError):
    """Bad input or configuration. The pipelines print the message as one line and exit non-zero."""


class ExportVerificationError(RuntimeError):
    """An exported SavedModel does not reproduce the in-memory model's outputs."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

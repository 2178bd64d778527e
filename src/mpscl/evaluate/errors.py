"""Errors of the evaluate package."""
from __future__ import annotations

from ..data.errors import DataError


class EvaluateError(DataError):
    """Inputs to evaluation or prediction do not fit together (dataset classes differ from the
    checkpoint's, an unlabelled set given to evaluate, an output that exists, ...).

    A :class:`~mpscl.data.DataError`, so the CLI reports it like other input errors."""

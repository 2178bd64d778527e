"""The one exception the data layer raises for bad inputs."""
from __future__ import annotations


class DataError(ValueError):
    """An input file, pattern, class map or prepared dataset is unusable.

    The message always names the file (or pattern, or folder) at fault and says why.
    """

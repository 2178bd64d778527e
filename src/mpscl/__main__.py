"""``python -m mpscl`` (and ``torchrun ... -m mpscl train``)."""
import sys

from .cli import main

sys.exit(main())

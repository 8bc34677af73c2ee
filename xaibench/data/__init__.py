"""Data: built-in offline datasets, user data files and sample selection.

``load_data`` takes ``NAME[:SPLIT]`` for an entry of ``DATASETS`` or a path to an image folder, ``.npz``,
``.csv`` or ``.pt``; ``select`` picks samples by position; ``prepare`` (module ``prepare``, which imports
torch) turns a selection into model inputs, targets and predictions. Importing this package does not import
torch. Models and data sit below the library packages and above ``xaibench.core``.
"""

from xaibench.data.base import Dataset
from xaibench.data.builtin import DATASETS
from xaibench.data.spec import load_data, select

__all__ = ["DATASETS", "Dataset", "load_data", "select"]

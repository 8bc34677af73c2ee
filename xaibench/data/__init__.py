"""Data: built-in offline datasets, user data files and sample selection.

``load_data`` takes ``NAME[:SPLIT]`` for an entry of ``DATASETS`` or a path to an image folder, ``.npz``,
``.csv`` or ``.pt``; ``select`` picks samples by position. Importing this package does not import torch.
"""

from xaibench.data.base import Dataset
from xaibench.data.builtin import DATASETS
from xaibench.data.spec import load_data, select

__all__ = ["DATASETS", "Dataset", "load_data", "select"]

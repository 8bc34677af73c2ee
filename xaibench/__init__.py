"""xaibench: an explainability and attribution workbench for PyTorch models.

Importing the package is cheap (no torch); subpackages import what they need.
"""

__version__ = "0.1.0"

"""Evaluation metrics (issue 3 fills this package)."""

"""Influence functions with EK-FAC (Grosse et al. 2023): which training examples drove a prediction.

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

from xaibench.influence.factors import STRATEGIES, Factors, FitConfig, fit_factors
from xaibench.influence.scores import Influence, Preconditioner, ScoreConfig
from xaibench.influence.task import ClassificationTask, RegressionTask, Task, task_for

__all__ = ["STRATEGIES", "ClassificationTask", "Factors", "FitConfig", "Influence", "Preconditioner",
           "RegressionTask", "ScoreConfig", "Task", "fit_factors", "task_for"]

"""Attribution methods: captum adapters, the batched path-integration engine, CAMs, perturbations."""

from xaibench.attribution.base import METHODS, Method, attribute, describe_params, parse_params

__all__ = ["METHODS", "Method", "attribute", "describe_params", "parse_params"]

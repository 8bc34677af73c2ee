"""LLM-prompted post-hoc explanations (Kroeger et al. 2023). In progress: only the reply parser exists."""

"""LLM-prompted post-hoc explanations (Kroeger et al. 2023). In progress: the reply parser and the
neighbourhood sampler exist; prompts, backends, cache and the llm method do not yet."""

"""LLM-prompted post-hoc explanations (Kroeger et al. 2023): the neighbourhood sampler, the four
prompting strategies (templates in prompts/), the backends (openai, replay, transformers), the response
cache, the client, the reply parser and the ``llm`` attribution method; ``job`` is llm-explain's."""

"""LLM-prompted post-hoc explanations (Kroeger et al. 2023): the neighbourhood sampler, the four
prompting strategies (templates in prompts/), the backends (openai, replay, transformers), the response
cache, the client, the reply parser and the ``llm`` attribution method (llm-explain's job is
``xaibench.jobs.llm``).

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

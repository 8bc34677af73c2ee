"""The core: what every layer above may use, and nothing from above it.

registry (named entries with metadata), errors (what the CLI maps to exit codes), runs (run
directories: staging, atomic writes, --overwrite), ownership (the manifest that proves xaibench wrote a
folder), distributed (torchrun process groups), progress, method_notes (what methods record while explaining),
batches (rows per pass), lazy (deferred imports), text (names safe to show) and credentials (URL
credentials kept out of records).

Layers, top to bottom; a module imports only from its own layer and the ones below, and no import circle
exists anywhere (tests/test_layers.py enforces both):

    xaibench.cli       argument parsing and printing only
    xaibench.jobs      one module per command or command group: a config in, a run directory out
    library packages   attribution, metrics, influence, concepts, llm, report: algorithms on tensors;
                       they know nothing of run directories or the CLI
    models, data       loading, metadata, preprocessing
    xaibench.core      this package
"""

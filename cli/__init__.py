"""Command-line interface: a typer app, one module per command group; argument parsing and printing only.

The top layer: commands build a job's config from their flags, call the job (``xaibench.jobs``) and print
its summary; all the work happens below (see ``xaibench.core`` for the layers).
"""

"""Runnable experiments, each a module with a ``run(...)`` function and a command in ``stochgrad.cli``."""

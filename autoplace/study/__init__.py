"""A search's machinery around its Optuna study: space, zero-shot screen, workers, the winner, the report.

The Python API's function is `autoplace.search` (api.py); this subpackage has its own name, so neither hides the
other.
"""

"""Placement search: an Optuna study over where prompt slots go, how long they are and how they are encoded."""

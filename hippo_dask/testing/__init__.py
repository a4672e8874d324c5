"""Helpers for testing code built on hippo_dask.

``hippo_dask.testing.strategies`` holds Hypothesis strategies (needs ``hypothesis``).
"""

__all__: list[str] = []

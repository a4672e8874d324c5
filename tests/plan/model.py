"""A brute-force model of the sharing rule, written without the trie, for the property tests.

The state after ``s`` steps along a trial's path is identified by the trial's fixed values, the
kinds of its sequences, and every sequential value at steps ``0 .. s - 1``. Two trials share a
step exactly when these identities are equal.
"""

from __future__ import annotations

from typing import Any

from hippo_dask.trial import Trial


def state(trial: Trial, steps: int) -> tuple[Any, ...]:
    """Identity of the state after ``steps`` steps (``steps >= 1``), value by value."""
    values = tuple(
        tuple((type(v).__name__, v) for v in trial.values_at(s).values()) for s in range(steps)
    )
    return (trial.fixed_key, trial.names, trial.kinds, values)


def unique_steps(requests: list[tuple[Trial, int]]) -> int:
    """Size of the prefix trie over per-step values: distinct states after 1..T steps."""
    return len({state(t, s) for t, T in requests for s in range(1, T + 1)})

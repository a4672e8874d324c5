"""Hypothesis strategies for sequences, trials and request streams.

The pools are deliberately small (a few start values, a few milestone lists, short horizons) so
that generated trials collide, share prefixes and split at interesting steps; wide random
floats would almost never share anything and test nothing.

Requires ``hypothesis`` (a test dependency).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from hippo_dask import seq
from hippo_dask.trial import Trial

__all__ = ["fixed_values", "requests", "sequences", "trials"]

_V0 = st.sampled_from([0.1, 0.05, 0.01])
_GAMMA = st.sampled_from([0.1, 0.5])
_MILESTONES = st.sampled_from([(), (5,), (10,), (5, 10), (10, 20), (3, 15, 25)])


def _multistep(levels: list[Any], marks: tuple[int, ...]) -> seq.Sequence:
    """A MultiStep over ``marks``, padding ``levels`` with its last value as needed."""
    wanted = len(marks) + 1
    padded = (levels + [levels[-1]] * wanted)[:wanted]
    return seq.MultiStep(padded, marks)


def float_sequences() -> st.SearchStrategy[seq.Sequence]:
    """Float sequences from every family, with parameters drawn from small pools."""
    base = st.one_of(
        st.builds(seq.Constant, _V0),
        st.builds(seq.StepLR, _V0, _GAMMA, _MILESTONES),
        st.builds(_multistep, st.lists(_V0, min_size=1, max_size=4), _MILESTONES),
        st.builds(seq.Exponential, _V0, st.sampled_from([0.9, 0.5])),
        st.builds(seq.Linear, _V0, st.sampled_from([0.01, 0.1]), st.sampled_from([5, 10])),
        st.builds(seq.Cosine, _V0, st.sampled_from([10, 20])),
        st.builds(seq.CosineWarmRestarts, _V0, st.sampled_from([4, 7]), st.sampled_from([1, 2])),
        st.builds(seq.Cyclic, st.sampled_from([0.01]), _V0, st.sampled_from([3, 5])),
    )
    return st.one_of(
        base,
        st.builds(seq.Warmup, st.sampled_from([2, 5]), _V0, base),
        st.builds(
            lambda a, n, b: seq.Piecewise((a, n), b), base, st.sampled_from([5, 10, 12]), base
        ),
    )


def int_sequences() -> st.SearchStrategy[seq.Sequence]:
    """Integer sequences (batch sizes)."""
    sizes = st.sampled_from([64, 128, 256])
    return st.one_of(
        st.builds(seq.Constant, sizes),
        st.builds(_multistep, st.lists(sizes, min_size=1, max_size=3), _MILESTONES),
    )


def sequences() -> st.SearchStrategy[seq.Sequence]:
    """Any sequence: floats, ints, or an optimizer switch of strings."""
    names = st.sampled_from(["sgd", "adam"])
    return st.one_of(
        float_sequences(),
        int_sequences(),
        st.builds(_multistep, st.lists(names, min_size=1, max_size=2), _MILESTONES),
    )


def fixed_values() -> st.SearchStrategy[dict[str, Any]]:
    """Fixed values, often equal between trials."""
    return st.fixed_dictionaries(
        {},
        optional={"optimizer": st.sampled_from(["sgd", "adam"]), "seed": st.sampled_from([0, 1])},
    )


def trials() -> st.SearchStrategy[Trial]:
    """Trials over the same sequential names (``lr``, and ``batch_size`` in most)."""
    return st.builds(
        lambda fixed, lr, bs: Trial(**fixed, lr=lr, **({} if bs is None else {"batch_size": bs})),
        fixed_values(),
        float_sequences(),
        st.one_of(st.none(), int_sequences()),
    )


def requests(max_size: int = 12, max_steps: int = 40) -> st.SearchStrategy[list[tuple[Trial, int]]]:
    """A stream of ``(trial, steps)`` requests; trials repeat and are re-requested."""
    return st.lists(
        st.tuples(trials(), st.integers(min_value=1, max_value=max_steps)),
        min_size=1,
        max_size=max_size,
    )

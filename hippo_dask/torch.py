"""PyTorch helpers for resumable training: data order, random state, and safe state files.

A Hippo stage may stop a trial after any step and another worker, in another process, may
resume it from the checkpoint, so everything that decides what training does next has to be
part of the trainer's state (Hippo, section 5.2):

- :class:`DataOrder`: which examples the next batch holds, derived only from ``(seed, epoch)``
  and a position, so it can be saved and resumed exactly, and the batch size may change between
  steps without losing the place;
- :func:`capture_rng` / :func:`restore_rng`: the states of Python's, numpy's and torch's global
  generators, as values a checkpoint can hold;
- :func:`save_state` / :func:`load_state`: ``torch.save`` and ``torch.load(weights_only=True)``
  with an explicit allow-list of numpy globals (:data:`SAFE_GLOBALS`), so states may hold numpy
  arrays and scalars, but loading a file never runs code.

Examples
--------
>>> order = DataOrder(10, seed=0)
>>> first = order.next_batch(4)
>>> saved = order.state_dict()
>>> again = DataOrder(10, seed=0)
>>> again.load_state_dict(saved)
>>> bool((again.next_batch(4) == order.next_batch(4)).all())
True
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# The state file format is storage's (hippo_dask.storage._state_file); users call it from here.
from hippo_dask.storage import SAFE_GLOBALS, load_state, safe_globals, save_state

__all__ = [
    "SAFE_GLOBALS",
    "DataOrder",
    "capture_rng",
    "load_state",
    "restore_rng",
    "safe_globals",
    "save_state",
    "seed_everything",
]


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


class DataOrder:
    """A resumable, seeded order over an in-memory dataset of ``n`` examples.

    Epoch ``e`` visits the examples in the order
    ``np.random.default_rng([seed, e]).permutation(n)``: a function of the seed and the epoch
    only, never of a global generator, so two objects with the same state hand out the same
    batches in any process.

    Parameters
    ----------
    n
        Number of examples (at least 1).
    seed
        Seed of the order (a non-negative integer).

    Notes
    -----
    Batch semantics: a batch never spans two epochs. When fewer than ``batch_size`` examples
    remain in the current epoch, :meth:`next_batch` returns just those (a short batch) and the
    next call starts the next epoch. Every epoch therefore visits every example exactly once,
    whatever batch sizes were asked for.

    The batch size is an argument of each call, not part of the state: a new batch size takes
    effect at the next call and continues from the current position, as in Hippo's data
    pipeline, where a batch-size schedule changes the batch size mid-epoch.

    Examples
    --------
    >>> order = DataOrder(5, seed=1)
    >>> [len(order.next_batch(2)) for _ in range(4)]
    [2, 2, 1, 2]
    >>> order.epoch, order.position
    (1, 2)
    """

    __slots__ = ("_epoch", "_n", "_permutation", "_position", "_seed")

    def __init__(self, n: int, seed: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"The value of `n` is {n!r}, but must be an integer `n >= 1`.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(
                f"The value of `seed` is {seed!r}, but must be an integer `seed >= 0`."
            )
        self._n = n
        self._seed = seed
        self._epoch = 0
        self._position = 0
        self._permutation: np.ndarray[Any, np.dtype[np.int64]] | None = None

    @property
    def n(self) -> int:
        """Number of examples."""
        return self._n

    @property
    def seed(self) -> int:
        """Seed of the order."""
        return self._seed

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from (0 first)."""
        return self._epoch

    @property
    def position(self) -> int:
        """How many examples of the current epoch were handed out already."""
        return self._position

    def permutation(self, epoch: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The order of the examples in ``epoch`` (a fresh array, ``int64``)."""
        if epoch < 0:
            raise ValueError(f"The value of `epoch` is {epoch!r}, but must be `epoch >= 0`.")
        rng = np.random.default_rng([self._seed, epoch])
        return rng.permutation(self._n).astype(np.int64)

    def next_batch(self, batch_size: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The indices of the next batch, and advance past them.

        Parameters
        ----------
        batch_size
            Largest number of indices to return (at least 1). Fewer come back at the end of an
            epoch; see the class notes.

        Returns
        -------
        numpy.ndarray
            A new ``int64`` array of ``min(batch_size, n - position)`` example indices.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"The value of `batch_size` is {batch_size!r}, but must be an integer.")
        if batch_size < 1:
            raise ValueError(
                f"The value of `batch_size` is {batch_size!r}, but must be `batch_size >= 1`."
            )
        if self._permutation is None:
            self._permutation = self.permutation(self._epoch)
        end = min(self._position + int(batch_size), self._n)
        batch = self._permutation[self._position : end].copy()
        if end == self._n:
            self._epoch += 1
            self._position = 0
            self._permutation = None
        else:
            self._position = end
        return batch

    def state_dict(self) -> dict[str, int]:
        """The state as plain ints: ``{"n", "seed", "epoch", "position"}``."""
        return {"n": self._n, "seed": self._seed, "epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a state made by :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the state belongs to another dataset size or seed, or is not a valid position.
        """
        missing = {"n", "seed", "epoch", "position"} - set(state)
        if missing:
            raise ValueError(
                f"DataOrder state is missing {sorted(missing)}; pass a dict made by "
                "DataOrder.state_dict()."
            )
        n, seed = int(state["n"]), int(state["seed"])
        if n != self._n or seed != self._seed:
            raise ValueError(
                f"DataOrder state was made for n={n}, seed={seed}, but this order has "
                f"n={self._n}, seed={self._seed}; build it as DataOrder({n}, seed={seed}) "
                "or load a state of the same dataset and seed."
            )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self._n:
            raise ValueError(
                f"DataOrder state has epoch={epoch}, position={position}, but needs "
                f"epoch >= 0 and 0 <= position < n={self._n}."
            )
        self._epoch = epoch
        self._position = position
        self._permutation = None

    def __repr__(self) -> str:
        return (
            f"DataOrder(n={self._n}, seed={self._seed}, epoch={self._epoch}, "
            f"position={self._position})"
        )


# --------------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The states of the global random generators, as checkpoint-safe values.

    Returns
    -------
    dict
        ``"python"``: :func:`random.getstate` (tuples of ints); ``"numpy"``: numpy's legacy
        global generator (:func:`numpy.random.get_state`) as a dict whose key array is an
        ``int64`` tensor; ``"torch"``: :func:`torch.get_rng_state` (a ``uint8`` tensor);
        ``"cuda"``: :func:`torch.cuda.get_rng_state_all` (a list of tensors), present only when
        CUDA is available. Every value loads with ``torch.load(weights_only=True)`` without any
        allow-list.

    See Also
    --------
    restore_rng

    Notes
    -----
    Where CUDA is available, reading its generator states initializes CUDA on every visible
    device; pin GPU workers to their device (``CUDA_VISIBLE_DEVICES``) so that each process
    touches only its own.
    """
    legacy: tuple[str, Any, int, int, float]
    legacy = np.random.get_state(legacy=True)  # type: ignore[assignment]
    kind, key, pos, has_gauss, cached_gaussian = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set the global random generators to a state made by :func:`capture_rng`.

    Parameters
    ----------
    state
        A dict from :func:`capture_rng`, possibly loaded from a checkpoint in another process.

    Notes
    -----
    A ``"cuda"`` entry is restored for as many devices as both the state and this process have;
    it is ignored where CUDA is not available (a CPU process cannot continue a GPU trial's CUDA
    stream anyway).
    """
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    key = numpy_state["key"]
    key_array = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state(
        (
            str(numpy_state["kind"]),
            key_array.astype(np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(_as_byte_tensor(state["torch"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        count = min(len(cuda), torch.cuda.device_count())
        for device in range(count):
            torch.cuda.set_rng_state(_as_byte_tensor(cuda[device]), device)


def _as_byte_tensor(value: Any) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return tensor.detach().to(device="cpu", dtype=torch.uint8).contiguous()


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python's, numpy's and torch's global generators, and ask for deterministic kernels.

    Parameters
    ----------
    seed
        The seed (a non-negative integer below ``2**32``, numpy's limit).
    deterministic
        Call ``torch.use_deterministic_algorithms(True)`` and turn off cuDNN benchmarking.
        Where CUDA is available this also sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is
        set already, which deterministic cuBLAS needs.

    Notes
    -----
    This changes process-wide state. A trainer that shares its process with other trainers (a
    Dask worker) should keep its own generator states instead: see :func:`capture_rng`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(
            f"The value of `seed` is {seed!r}, but must be an integer `0 <= seed < 2**32`."
        )
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        if torch.cuda.is_available():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)

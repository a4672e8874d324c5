"""State files: the payload of every checkpoint, a trainer state that loads without running code.

:func:`save_state` writes a mapping of tensors, numpy arrays and scalars, Python scalars, strings
and nested dicts, lists and tuples of them with ``torch.save``, after checking that
:func:`load_state` can read it back; :func:`load_state` reads it with
``torch.load(weights_only=True)`` and an explicit allow-list of numpy globals
(:data:`SAFE_GLOBALS`), so loading a file never runs code. :mod:`hippo_dask.storage._checkpoints`
wraps these bytes in its checksummed header; :mod:`hippo_dask.torch` offers the same functions to
users.

This module imports torch, so the storage package imports it only when a state is saved or
loaded (through its namespace's lazy attributes, or inside the store's methods).
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import threading
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final

import numpy as np
import torch

from hippo_dask._floors import check_torch_loads_safely
from hippo_dask.errors import CorruptCheckpointError

__all__ = ["SAFE_GLOBALS", "load_state", "safe_globals", "save_state"]


def _numpy_globals() -> tuple[Any, ...]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    scalar = multiarray.scalar
    dtype_classes: set[type] = {type(np.dtype(code)) for code in np.typecodes["All"]}
    dtypes_module = getattr(np, "dtypes", None)
    if dtypes_module is not None:
        for name in dir(dtypes_module):
            value = getattr(dtypes_module, name)
            if name.endswith("DType") and isinstance(value, type):
                dtype_classes.add(value)
    # Files written by numpy 1 name the module numpy.core, files by numpy 2 numpy._core:
    # accept both spellings of the same two functions.
    aliases = [
        (function, f"{module}.multiarray.{function.__name__}")
        for function in (reconstruct, scalar)
        for module in ("numpy.core", "numpy._core")
        if f"{module}.multiarray" != function.__module__
    ]
    return (
        reconstruct,
        scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}"),
        *aliases,
    )


SAFE_GLOBALS: Final[tuple[Any, ...]] = _numpy_globals()
"""The globals, beyond torch's own, that :func:`load_state` allows: numpy's array
reconstruction (``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``), its scalars
(``numpy._core.multiarray.scalar``) and dtypes (``numpy.dtype`` and the concrete
``numpy.dtypes.*DType`` classes). Nothing else: none of them runs code a file chooses. A tuple,
so it cannot be widened by accident."""

_safe_lock = threading.Lock()
_safe_depth = 0
_safe_context: contextlib.ExitStack | None = None


@contextlib.contextmanager
def safe_globals() -> Iterator[None]:
    """Allow :data:`SAFE_GLOBALS` in ``torch.load(weights_only=True)`` within the block.

    Unlike ``torch.serialization.safe_globals`` alone, this is safe with threads (a Dask worker
    loads checkpoints from several threads): torch keeps one allow-list per process, and this
    context adds the entries the list lacks when the first thread enters and removes just those
    when the last one leaves, so it never removes an entry while another thread loads, nor an
    entry somebody else added.

    Examples
    --------
    >>> import io, numpy as np, torch
    >>> buffer = io.BytesIO()
    >>> torch.save({"a": np.arange(3)}, buffer)
    >>> _ = buffer.seek(0)
    >>> with safe_globals():
    ...     torch.load(buffer, weights_only=True)["a"].tolist()
    [0, 1, 2]
    """
    global _safe_depth, _safe_context
    with _safe_lock:
        if _safe_depth == 0:
            present = {id(g) for g in torch.serialization.get_safe_globals()}
            missing = [g for g in SAFE_GLOBALS if id(g) not in present]
            _safe_context = contextlib.ExitStack()
            _safe_context.enter_context(torch.serialization.safe_globals(missing))
        _safe_depth += 1
    try:
        yield
    finally:
        with _safe_lock:
            _safe_depth -= 1
            if _safe_depth == 0 and _safe_context is not None:
                _safe_context.close()
                _safe_context = None


_GLOBAL_PATTERN = re.compile(r"GLOBAL (\S+)")
_REFUSALS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Can only create new object",
    "Can only build",
    "Trying to call reduce",
    "Unsupported operand",
)


def _reason(message: str) -> str:
    # torch's message wraps the reason in advice to allow-list the global or to load with
    # weights_only=False: keep only the line that says why.
    lines = [line for line in message.splitlines() if any(r in line for r in _REFUSALS)]
    text = lines[0] if lines else message.strip().splitlines()[0]
    text = text.split("WeightsUnpickler error: ", 1)[-1]
    return text.split(" Please use", 1)[0].strip()


def save_state(state: Mapping[str, Any], fileobj: IO[bytes]) -> None:
    """Write ``state`` with ``torch.save``, checking that :func:`load_state` can read it back.

    Parameters
    ----------
    state
        A mapping of tensors, numpy arrays, numpy scalars, Python scalars and strings, and
        nested dicts, lists and tuples of them.
    fileobj
        A binary file open for writing.

    Raises
    ------
    TypeError
        If the state holds something that cannot be pickled (a lambda, an open file) or that
        would need a global outside torch's and :data:`SAFE_GLOBALS` to load (an instance of
        one's own class): such a state could be saved but never loaded safely. Nothing is
        written to ``fileobj`` then.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"A state must be a mapping (a dict), but got {type(state).__name__}.")
    buffer = io.BytesIO()
    try:
        torch.save(state if isinstance(state, dict) else dict(state), buffer)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"The state cannot be saved: {exc}. A state may hold tensors, numpy arrays and "
            "scalars, Python numbers, strings, None, and dicts, lists and tuples of them."
        ) from exc
    buffer.seek(0)
    with safe_globals():
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    if unsafe:
        raise TypeError(
            f"The state holds objects that would need {sorted(unsafe)} to load, which "
            "torch.load(weights_only=True) refuses because loading them could run code. Convert "
            "them to tensors, numpy arrays or plain Python values (e.g. a dataclass to a dict)."
        )
    fileobj.write(buffer.getbuffer())


def load_state(fileobj: IO[bytes], *, name: str | None = None) -> dict[str, Any]:
    """Read a state written by :func:`save_state`, running no code from the file.

    Parameters
    ----------
    fileobj
        A binary file open for reading (seekable).
    name
        What to call the file in error messages (a path or URI).

    Returns
    -------
    dict
        The state. Tensors, numpy arrays and scalars, Python scalars, strings, dicts (including
        ``OrderedDict``), lists and tuples come back as they were saved.

    Raises
    ------
    CorruptCheckpointError
        If loading would need a global that is not allowed (torch's own plus
        :data:`SAFE_GLOBALS`), i.e. the file would run code, or if the file is not a readable
        ``torch.save`` file, or does not hold a dict.
    DependencyError
        If the installed torch is older than :data:`hippo_dask._floors.TORCH_FLOOR`, whose
        ``weights_only`` loading crafted files could bypass; nothing is read then.
    """
    where = f"checkpoint {name}" if name else "checkpoint"
    check_torch_loads_safely(where)
    try:
        with safe_globals():
            state = torch.load(fileobj, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if any(marker in message for marker in _REFUSALS):
            match = _GLOBAL_PATTERN.search(message)
            needs = f"the global {match.group(1)}" if match else "a global"
            raise CorruptCheckpointError(
                f"{where} was refused: loading it could run code, as it needs {needs}, which is "
                "not allowed (only torch's own globals and hippo_dask.torch.SAFE_GLOBALS are). "
                f"Unpickler said: {_reason(message)}"
            ) from None
        raise CorruptCheckpointError(f"{where} cannot be unpickled: {message}") from exc
    except Exception as exc:  # noqa: BLE001 - malformed bytes fail in many ways (struct, index)
        raise CorruptCheckpointError(
            f"{where} is not a readable torch.save file: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise CorruptCheckpointError(
            f"{where} holds a {type(state).__name__}, but a state must be a dict."
        )
    return state

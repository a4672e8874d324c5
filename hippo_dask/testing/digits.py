"""The reference trainer: a small CNN on scikit-learn's 8x8 digits, resumable bit for bit.

:class:`DigitsTrainer` is what the engine's tests, benchmarks and demos train, and an example of
a :class:`~hippo_dask.trainer.Trainer` done right:

- one step is one minibatch, drawn by a :class:`~hippo_dask.torch.DataOrder`, so the batch size
  can change at any step and chunked training (``train(2); train(3)``) equals ``train(5)``;
- the trainer owns its random generator states (:func:`~hippo_dask.torch.capture_rng`): it swaps
  them in for the duration of :meth:`~DigitsTrainer.train` and back out after, so other trainers
  running in the same worker process between its stages change nothing;
- :meth:`~DigitsTrainer.state_dict` holds model, optimizer, data order, generator states, step
  count and current values, and loads with ``torch.load(weights_only=True)``.

The data (1,797 images that ship with scikit-learn, no download) are loaded once per process.
The split is fixed whatever the trial's seed: ``np.random.default_rng(0)`` permutes the
examples, the first 1,500 train and the other 297 validate.

Examples
--------
>>> trainer = DigitsTrainer({"optimizer": "sgd", "seed": 0})
>>> trainer.setup({"lr": 0.1, "batch_size": 32})
>>> trainer.train(3)
>>> sorted(trainer.evaluate())
['val_acc', 'val_loss']
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
from collections.abc import Iterator, Mapping
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hippo_dask.torch import DataOrder, capture_rng, restore_rng
from hippo_dask.trainer import Trainer

__all__ = ["OPTIMIZERS", "TRAIN_SIZE", "DigitsCNN", "DigitsTrainer", "digits_data"]

TRAIN_SIZE: Final = 1500
"""Training examples; the remaining 297 of the 1,797 digits are the validation set."""

OPTIMIZERS: Final = ("sgd", "sgd_momentum", "adam")
"""Values of the ``"optimizer"`` config key."""

_CONFIG_KEYS: Final = frozenset({"optimizer", "seed", "width", "dropout", "device"})
_HP_KEYS: Final = frozenset({"lr", "batch_size", "momentum"})
_STATE_VERSION: Final = 1


@functools.cache
def digits_data(
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits as ``(x_train, y_train, x_val, y_val)`` on ``device``, loaded once per process.

    Images are ``float32`` of shape ``(n, 1, 8, 8)`` scaled to ``[0, 1]``; labels are ``int64``.
    The tensors are shared by every trainer in the process: do not modify them.
    """
    if device != "cpu":
        return tuple(t.to(device) for t in digits_data())  # type: ignore[return-value]
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)[:, None, :, :] / np.float32(16.0)
    labels = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    train, val = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
    return (
        torch.from_numpy(np.ascontiguousarray(images[train])),
        torch.from_numpy(np.ascontiguousarray(labels[train])),
        torch.from_numpy(np.ascontiguousarray(images[val])),
        torch.from_numpy(np.ascontiguousarray(labels[val])),
    )


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (``1 -> width``, ``width -> 2 width`` with stride 2) and a linear
    layer to 10 classes, with optional dropout before it.

    Parameters
    ----------
    width
        Channels of the first convolution.
    dropout
        Dropout probability before the linear layer.
    """

    def __init__(self, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(n, 10)`` for images of shape ``(n, 1, 8, 8)``."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout(torch.flatten(x, 1))
        out: torch.Tensor = self.fc(x)
        return out


class DigitsTrainer(Trainer):
    """The reference trainer: a small CNN on scikit-learn's digits; one step is one minibatch.

    Parameters
    ----------
    config
        Fixed values: ``"optimizer"`` (``"sgd"``, ``"sgd_momentum"`` or ``"adam"``, required),
        ``"seed"`` (int in ``[0, 2**32)``, default 0; decides initial weights, data order and
        dropout), ``"width"`` (int >= 1, default 8) and ``"dropout"`` (float in ``[0, 1)``,
        default 0.0), ``"device"`` (a torch device such as ``"cuda"``, default ``"cpu"``: model,
        optimizer state and data live there; on CUDA the trainer turns on PyTorch's
        deterministic algorithms, which needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the
        workers' environment).

    Notes
    -----
    Sequential values, given to :meth:`setup`: ``"lr"`` (float > 0) and ``"batch_size"``
    (int >= 1) are needed before the first step; ``"momentum"`` (float >= 0, default 0.9)
    applies to ``"sgd_momentum"`` only. A change applies from the next step on: the optimizer's
    parameter groups are updated in place (its state, such as momentum buffers, is kept) and the
    next batch has the new size, continuing from the current place in the epoch.

    Training is deterministic on CPU for a fixed ``torch.get_num_threads()``; tests set it to 1.
    The trainer swaps the process's global generator states while it trains, so two trainers
    must not train at the same time in two threads of one process (Dask GPU workers run one
    task at a time).

    Examples
    --------
    >>> a = DigitsTrainer({"optimizer": "adam", "seed": 1})
    >>> a.setup({"lr": 0.01, "batch_size": 64})
    >>> a.train(2)
    >>> b = DigitsTrainer({"optimizer": "adam", "seed": 1})
    >>> b.load_state_dict(a.state_dict())
    >>> b.setup({"lr": 0.01, "batch_size": 64})
    >>> a.train(1); b.train(1)
    >>> all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    True
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        unknown = set(self.config) - _CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"DigitsTrainer does not know the config keys {sorted(unknown)}; it takes "
                f"{sorted(_CONFIG_KEYS)}."
            )
        self.optimizer_name = self.config.get("optimizer")
        if self.optimizer_name not in OPTIMIZERS:
            raise ValueError(
                f"The value of `optimizer` is {self.optimizer_name!r}, but must be one of "
                f"{list(OPTIMIZERS)}, e.g. DigitsTrainer({{'optimizer': 'sgd', 'seed': 0}})."
            )
        self.seed = _integer("seed", self.config.get("seed", 0), low=0, high=2**32 - 1)
        width = _integer("width", self.config.get("width", 8), low=1, high=1024)
        dropout = float(self.config.get("dropout", 0.0))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"The value of `dropout` is {dropout!r}, but must be in [0, 1).")
        self.device = str(self.config.get("device", "cpu"))
        if self.device.startswith("cuda"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True)

        self._rng = _seeded_rng(self.seed)
        with self._own_rng():
            self.model = DigitsCNN(width, dropout).to(self.device)
        self.optimizer = self._make_optimizer()
        self.order = DataOrder(TRAIN_SIZE, self.seed)
        self.steps = 0
        """Steps trained so far (minibatches), counting those before a loaded checkpoint."""
        self.hp: dict[str, float | int] = {}
        """The sequential values in force."""

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # The learning rate is a placeholder until setup() gives the real one.
        params = self.model.parameters()
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=0.0)
        if self.optimizer_name == "sgd_momentum":
            return torch.optim.SGD(params, lr=0.0, momentum=0.9)
        return torch.optim.SGD(params, lr=0.0)

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        outer = capture_rng()
        restore_rng(self._rng)
        try:
            yield
        finally:
            self._rng = capture_rng()
            restore_rng(outer)

    def setup(self, hp: Mapping[str, Any]) -> None:
        """Apply sequential values (all at first, then those that changed); see the Notes."""
        unknown = set(hp) - _HP_KEYS
        if unknown:
            raise ValueError(
                f"DigitsTrainer does not know the hyper-parameters {sorted(unknown)}; it takes "
                f"{sorted(_HP_KEYS)}."
            )
        values: dict[str, float | int] = {}
        if "lr" in hp:
            lr = float(hp["lr"])
            if not (math.isfinite(lr) and lr > 0.0):
                raise ValueError(f"The value of `lr` is {hp['lr']!r}, but must be > 0.")
            values["lr"] = lr
        if "batch_size" in hp:
            values["batch_size"] = _integer("batch_size", hp["batch_size"], low=1, high=10**9)
        if "momentum" in hp:
            if self.optimizer_name != "sgd_momentum":
                raise ValueError(
                    f"`momentum` applies to optimizer 'sgd_momentum' only, but this trainer's "
                    f"optimizer is {self.optimizer_name!r}; leave `momentum` out of its space."
                )
            momentum = float(hp["momentum"])
            if not (math.isfinite(momentum) and momentum >= 0.0):
                raise ValueError(
                    f"The value of `momentum` is {hp['momentum']!r}, but must be >= 0."
                )
            values["momentum"] = momentum
        for group in self.optimizer.param_groups:
            for key in ("lr", "momentum"):
                if key in values:
                    group[key] = values[key]
        self.hp.update(values)

    def train(self, steps: int) -> None:
        """Train ``steps`` minibatches at the current values."""
        steps = _integer("steps", steps, low=0, high=None)
        missing = {"lr", "batch_size"} - set(self.hp)
        if missing and steps:
            raise RuntimeError(
                f"DigitsTrainer.train needs {sorted(missing)} first: call "
                "setup({'lr': 0.1, 'batch_size': 64}) before training."
            )
        x_train, y_train, _, _ = digits_data(self.device)
        batch_size = int(self.hp.get("batch_size", 1))
        self.model.train()
        with self._own_rng():
            for _ in range(steps):
                index = torch.from_numpy(self.order.next_batch(batch_size)).to(self.device)
                loss = F.cross_entropy(self.model(x_train[index]), y_train[index])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                self.steps += 1

    def evaluate(self) -> dict[str, float]:
        """Validation accuracy and mean cross-entropy; changes nothing training depends on."""
        _, _, x_val, y_val = digits_data(self.device)
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(x_val)
                loss = F.cross_entropy(logits, y_val)
                accuracy = (logits.argmax(dim=1) == y_val).to(torch.float64).mean()
        finally:
            self.model.train()
        return {"val_acc": float(accuracy), "val_loss": float(loss)}

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (later training does not change it) of everything a resume needs."""
        state = {
            "version": _STATE_VERSION,
            "config": dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_order": self.order.state_dict(),
            "rng": self._rng,
            "steps": self.steps,
            "hp": dict(self.hp),
        }
        return copy.deepcopy(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a trainer with the same config.

        The state is copied, so one state may be loaded into several trainers.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"DigitsTrainer state has version {state.get('version')!r}, but this trainer "
                f"reads version {_STATE_VERSION}."
            )
        if state["config"] != self.config:
            raise ValueError(
                f"DigitsTrainer state was made with config {state['config']!r}, but this "
                f"trainer has {self.config!r}; build the trainer with the state's config."
            )
        state = copy.deepcopy(dict(state))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.order.load_state_dict(state["data_order"])
        self._rng = state["rng"]
        self.steps = int(state["steps"])
        self.hp = dict(state["hp"])


def _integer(name: str, value: Any, *, low: int, high: int | None) -> int:
    """``value`` as an int (integral floats and numpy integers accepted) within bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"The value of `{name}` is {value!r}, but must be an integer.")
    if not float(value).is_integer():
        raise ValueError(f"The value of `{name}` is {value!r}, but must be an integer.")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"The value of `{name}` is {value!r}, but must be {bound}.")
    return number


def _seeded_rng(seed: int) -> dict[str, Any]:
    """The generator states seeding with ``seed`` gives, without changing the current ones."""
    outer = capture_rng()
    try:
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)  # dropout on a "cuda" device draws from these
        return capture_rng()
    finally:
        restore_rng(outer)

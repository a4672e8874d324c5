"""hippo_dask.torch and the reference DigitsTrainer: exact resumes, in and across processes."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hippo_dask.torch as hdt
from hippo_dask.errors import CorruptCheckpointError
from hippo_dask.storage import FsspecCheckpointStore
from hippo_dask.testing.digits import TRAIN_SIZE, DigitsTrainer, digits_data
from hippo_dask.torch import DataOrder, capture_rng, load_state, restore_rng, save_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Bitwise comparisons need a fixed intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def memory_store() -> FsspecCheckpointStore:
    return FsspecCheckpointStore(f"memory://torch-helpers-{uuid.uuid4().hex}/ckpt")


# ---------------------------------------------------------------------------------------------
# DataOrder
# ---------------------------------------------------------------------------------------------


def test_each_epoch_is_the_documented_permutation() -> None:
    order = DataOrder(10, seed=3)
    seen = [order.next_batch(4) for _ in range(6)]  # 4 4 2 | 4 4 2
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in range(2):
        expected = np.random.default_rng([3, epoch]).permutation(10)
        assert np.array_equal(np.concatenate(seen[3 * epoch : 3 * epoch + 3]), expected)
    assert order.epoch == 2 and order.position == 0
    assert all(b.dtype == np.int64 for b in seen)


def test_orders_depend_on_seed_and_epoch_only() -> None:
    np.random.seed(0)
    a = [DataOrder(50, seed=1).next_batch(50) for _ in range(2)]
    np.random.seed(99)  # the global generator plays no part
    b = DataOrder(50, seed=1).next_batch(50)
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[0], b)
    assert not np.array_equal(a[0], DataOrder(50, seed=2).next_batch(50))
    order = DataOrder(50, seed=1)
    assert not np.array_equal(order.next_batch(50), order.next_batch(50))  # epochs differ


def test_resume_mid_epoch_continues_identically() -> None:
    original = DataOrder(37, seed=5)
    for _ in range(3):
        original.next_batch(8)
    state = original.state_dict()
    assert state == {"n": 37, "seed": 5, "epoch": 0, "position": 24}
    assert all(type(v) is int for v in state.values())
    resumed = DataOrder(37, seed=5)
    resumed.load_state_dict(state)
    for size in [8, 8, 3, 40, 1, 8]:
        assert np.array_equal(original.next_batch(size), resumed.next_batch(size))
    assert original.state_dict() == resumed.state_dict()


def test_resume_through_the_checkpoint_store() -> None:
    order = DataOrder(20, seed=0)
    order.next_batch(7)
    store = memory_store()
    loaded = store.load(store.save("order", {"order": order.state_dict()}))
    resumed = DataOrder(20, seed=0)
    resumed.load_state_dict(loaded["order"])
    assert np.array_equal(order.next_batch(30), resumed.next_batch(30))


def test_a_batch_size_change_keeps_the_position() -> None:
    order = DataOrder(20, seed=4)
    permutation = order.permutation(0)
    assert np.array_equal(order.next_batch(3), permutation[0:3])
    assert np.array_equal(order.next_batch(3), permutation[3:6])
    assert np.array_equal(order.next_batch(5), permutation[6:11])  # new size at the next call
    assert np.array_equal(order.next_batch(2), permutation[11:13])
    assert np.array_equal(order.next_batch(100), permutation[13:20])  # cut at the epoch end
    assert order.epoch == 1
    assert np.array_equal(order.next_batch(4), order.permutation(1)[0:4])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    cut=st.integers(0, 40),
)
def test_batches_tile_the_epochs_and_resume_anywhere(
    n: int, seed: int, sizes: list[int], cut: int
) -> None:
    order = DataOrder(n, seed)
    batches = []
    resumed: DataOrder | None = None
    for i, size in enumerate(sizes):
        if i == cut:
            resumed = DataOrder(n, seed)
            resumed.load_state_dict(order.state_dict())
        batch = order.next_batch(size)
        if resumed is not None:
            assert np.array_equal(resumed.next_batch(size), batch)
        batches.append(batch)
    flat = np.concatenate(batches)
    epochs = order.epoch + 1
    expected = np.concatenate([order.permutation(e) for e in range(epochs)])
    assert np.array_equal(flat, expected[: len(flat)])
    # A batch never spans two epochs.
    boundaries = set(range(0, len(expected) + 1, n))
    ends = np.cumsum([len(b) for b in batches])
    starts = ends - [len(b) for b in batches]
    for start, end in zip(starts, ends):
        assert not any(start < b < end for b in boundaries)


def test_data_order_validates() -> None:
    with pytest.raises(ValueError, match="`n`"):
        DataOrder(0, seed=1)
    with pytest.raises(ValueError, match="`seed`"):
        DataOrder(5, seed=-1)
    order = DataOrder(5, seed=1)
    with pytest.raises(ValueError, match="`batch_size`"):
        order.next_batch(0)
    with pytest.raises(TypeError, match="`batch_size`"):
        order.next_batch(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n=6, seed=1.*n=5, seed=1"):
        order.load_state_dict({"n": 6, "seed": 1, "epoch": 0, "position": 0})
    with pytest.raises(ValueError, match=r"n=5, seed=2.*DataOrder\(5, seed=2\)"):
        order.load_state_dict({"n": 5, "seed": 2, "epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="position"):
        order.load_state_dict({"n": 5, "seed": 1, "epoch": 0, "position": 5})
    with pytest.raises(ValueError, match="missing"):
        order.load_state_dict({"n": 5, "seed": 1})
    assert "epoch=0" in repr(order)


# ---------------------------------------------------------------------------------------------
# Random state
# ---------------------------------------------------------------------------------------------


def draws() -> tuple[float, float, float, float]:
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        float(torch.rand(1)),
    )


def test_rng_round_trips_through_the_checkpoint_store() -> None:
    np.random.randn()  # leave a cached Gaussian in numpy's legacy state
    state = capture_rng()
    expected = draws()
    store = memory_store()
    loaded = store.load(store.save("rng", {"rng": state}))["rng"]
    draws()
    restore_rng(loaded)
    assert draws() == expected
    restore_rng(state)
    assert draws() == expected


def test_captured_rng_needs_no_allow_list() -> None:
    buffer = io.BytesIO()
    torch.save(capture_rng(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain torch, no hippo allow-list
    assert set(state) >= {"python", "numpy", "torch"}
    assert state["torch"].dtype == torch.uint8
    assert ("cuda" in state) == torch.cuda.is_available()


def test_seed_everything_seeds_every_generator() -> None:
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        hdt.seed_everything(123)
        first = draws()
        hdt.seed_everything(123)
        assert draws() == first
        assert torch.are_deterministic_algorithms_enabled()
        with pytest.raises(ValueError, match="`seed`"):
            hdt.seed_everything(-1)
    finally:
        torch.use_deterministic_algorithms(deterministic)


# ---------------------------------------------------------------------------------------------
# save_state / load_state and the allow-list
# ---------------------------------------------------------------------------------------------


def test_safe_globals_are_numpy_only() -> None:
    for entry in hdt.SAFE_GLOBALS:
        obj, name = entry if isinstance(entry, tuple) else (entry, entry.__module__)
        assert name.startswith("numpy"), entry
        assert obj.__module__.startswith("numpy"), entry


def test_safe_globals_context_restores_torchs_list() -> None:
    before = set(map(id, torch.serialization.get_safe_globals()))
    with hdt.safe_globals():
        with hdt.safe_globals():
            assert np.ndarray in torch.serialization.get_safe_globals()
        assert np.ndarray in torch.serialization.get_safe_globals()
    assert set(map(id, torch.serialization.get_safe_globals())) == before


def test_safe_globals_keeps_entries_somebody_else_added() -> None:
    with torch.serialization.safe_globals([np.ndarray]):
        with hdt.safe_globals():
            pass
        assert np.ndarray in torch.serialization.get_safe_globals()
    assert np.ndarray not in torch.serialization.get_safe_globals()


def test_loads_from_many_threads_at_once() -> None:
    buffer = io.BytesIO()
    save_state({"a": np.arange(5), "s": np.float32(2)}, buffer)
    data = buffer.getvalue()
    before = set(map(id, torch.serialization.get_safe_globals()))
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(25):
                state = load_state(io.BytesIO(data))
                assert state["a"].tolist() == [0, 1, 2, 3, 4]
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(map(id, torch.serialization.get_safe_globals())) == before


class Gadget:
    def __reduce__(self) -> Any:
        return (os.system, ("echo should-never-run",))


def test_load_state_refuses_code_and_names_the_global() -> None:
    buffer = io.BytesIO()
    torch.save({"g": Gadget()}, buffer)
    buffer.seek(0)
    with pytest.raises(CorruptCheckpointError, match=r"refused.*run code.*system") as info:
        load_state(buffer, name="evil.pt")
    assert "evil.pt" in str(info.value)


def test_save_state_refuses_what_could_not_be_loaded() -> None:
    with pytest.raises(TypeError, match="Gadget|system"):
        save_state({"g": Gadget()}, io.BytesIO())
    with pytest.raises(TypeError, match="mapping"):
        save_state([1, 2], io.BytesIO())  # type: ignore[arg-type]


def test_load_state_wants_a_dict() -> None:
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    buffer.seek(0)
    with pytest.raises(CorruptCheckpointError, match="list"):
        load_state(buffer)


# ---------------------------------------------------------------------------------------------
# The reference trainer
# ---------------------------------------------------------------------------------------------

HP = {"lr": 0.05, "batch_size": 32}
CONFIGS = [
    {"optimizer": "sgd", "seed": 0},
    {"optimizer": "sgd_momentum", "seed": 1, "width": 4},
    {"optimizer": "adam", "seed": 2, "dropout": 0.25},
]


def params(trainer: DigitsTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def trained(config: dict[str, Any], chunks: list[int], hp: dict[str, Any] = HP) -> DigitsTrainer:
    trainer = DigitsTrainer(config)
    trainer.setup(hp)
    for steps in chunks:
        trainer.train(steps)
    return trainer


def test_digits_split_is_fixed() -> None:
    x_train, y_train, x_val, y_val = digits_data()
    assert x_train.shape == (TRAIN_SIZE, 1, 8, 8) and x_val.shape == (297, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_train.max()) == 1.0 and float(x_train.min()) == 0.0
    assert digits_data() is digits_data()  # loaded once per process


def test_trainer_learns() -> None:
    hp = {"lr": 0.1, "batch_size": 32}
    trainer = trained({"optimizer": "sgd_momentum", "seed": 0}, [150], hp)
    metrics = trainer.evaluate()
    assert set(metrics) == {"val_acc", "val_loss"}
    assert metrics["val_acc"] > 0.85, metrics


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["optimizer"])
def test_chunked_training_equals_one_go(config: dict[str, Any]) -> None:
    whole = trained(config, [5])
    chunked = DigitsTrainer(config)
    chunked.setup(HP)
    chunked.train(2)
    chunked.evaluate()  # evaluating changes nothing training depends on
    chunked.train(0)
    chunked.train(3)
    assert_same(params(whole), params(chunked))
    assert whole.steps == chunked.steps == 5


def test_trainers_sharing_a_process_do_not_disturb_each_other() -> None:
    config = {"optimizer": "adam", "seed": 3, "dropout": 0.5}
    alone = trained(config, [6])
    before = capture_rng()
    interleaved = DigitsTrainer(config)
    interleaved.setup(HP)
    interleaved.train(2)
    trained({"optimizer": "adam", "seed": 4, "dropout": 0.5}, [4])
    random.random(), np.random.rand(), torch.rand(3)  # the process uses its generators too
    interleaved.train(4)
    assert_same(params(alone), params(interleaved))
    # Building and training a trainer leaves the process's generators where they were.
    restore_rng(before)
    expected = draws()
    restore_rng(before)
    trained(config, [2])
    assert draws() == expected


def test_hyper_parameter_changes_apply_from_the_next_step() -> None:
    config = {"optimizer": "sgd_momentum", "seed": 5}
    trainer = trained(config, [3])
    position = trainer.order.position
    trainer.setup({"batch_size": 50, "lr": 0.01, "momentum": 0.5})
    assert all(g["lr"] == 0.01 and g["momentum"] == 0.5 for g in trainer.optimizer.param_groups)
    trainer.train(1)
    assert trainer.order.position == position + 50
    assert trainer.hp == {"lr": 0.01, "batch_size": 50, "momentum": 0.5}
    # Same schedule through a checkpoint in the middle: same weights.
    first = trained(config, [3])
    second = DigitsTrainer(config)
    second.load_state_dict(first.state_dict())
    second.setup({"batch_size": 50, "lr": 0.01, "momentum": 0.5})
    second.train(1)
    assert_same(params(trainer), params(second))


def test_state_dict_is_a_snapshot_and_loads_into_several_trainers() -> None:
    config = {"optimizer": "adam", "seed": 6}
    source = trained(config, [2])
    state = source.state_dict()
    frozen = [t.clone() for t in state["model"].values()]
    source.train(2)
    assert all(torch.equal(a, b) for a, b in zip(frozen, state["model"].values()))
    children = []
    for _ in range(2):
        child = DigitsTrainer(config)
        child.load_state_dict(state)
        child.setup(HP)
        child.train(3)
        children.append(params(child))
    assert_same(children[0], children[1])  # no optimizer state shared between the two


def test_trainer_state_round_trips_through_the_store() -> None:
    config = CONFIGS[2]
    trainer = trained(config, [3])
    store = memory_store()
    loaded = store.load(store.save("t", trainer.state_dict()))
    resumed = DigitsTrainer(config)
    resumed.load_state_dict(loaded)
    resumed.setup(HP)
    trainer.train(2)
    resumed.train(2)
    assert_same(params(trainer), params(resumed))
    assert resumed.steps == 5


def test_trainer_validates() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        DigitsTrainer({"optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="config keys"):
        DigitsTrainer({"optimizer": "sgd", "lr": 0.1})
    trainer = DigitsTrainer({"optimizer": "sgd"})
    with pytest.raises(RuntimeError, match="setup"):
        trainer.train(1)
    with pytest.raises(ValueError, match="momentum"):
        trainer.setup({"momentum": 0.9})
    with pytest.raises(ValueError, match="hyper-parameters"):
        trainer.setup({"weight_decay": 0.1})
    with pytest.raises(ValueError, match="batch_size"):
        trainer.setup({"batch_size": 12.5})
    with pytest.raises(ValueError, match="`lr`"):
        trainer.setup({"lr": -1.0})
    trainer.setup({"batch_size": 64.0, "lr": np.float64(0.1)})  # integral floats are fine
    assert trainer.hp == {"batch_size": 64, "lr": 0.1}
    other = DigitsTrainer({"optimizer": "sgd", "seed": 1})
    with pytest.raises(ValueError, match="config"):
        other.load_state_dict(trainer.state_dict())


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from hippo_dask.storage import FsspecCheckpointStore
    from hippo_dask.testing.digits import DigitsTrainer

    torch.set_num_threads(1)
    folder, hp = sys.argv[1], {"lr": 0.05, "batch_size": 32}
    store = FsspecCheckpointStore(folder)
    for i, uri in enumerate(sys.argv[2:]):
        state = store.load(uri)
        trainer = DigitsTrainer(state["config"])
        trainer.load_state_dict(state)
        trainer.setup(hp)
        trainer.train(3)
        store.save(f"resumed-{i}", trainer.state_dict())
    """
)


def test_resume_in_a_new_process_is_bitwise_equal(tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path / "ckpt"))
    uris, expected = [], []
    for i, config in enumerate(CONFIGS):
        expected.append(params(trained(config, [6])))
        uris.append(store.save(f"half-{i}", trained(config, [3]).state_dict()))
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "ckpt"), *uris],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for i, config in enumerate(CONFIGS):
        state = store.load(store.uri(f"resumed-{i}"))
        resumed = DigitsTrainer(config)
        resumed.load_state_dict(state)
        assert resumed.steps == 6
        assert_same(expected[i], params(resumed))

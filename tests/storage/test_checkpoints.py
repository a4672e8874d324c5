"""Checkpoint store: exact round trips, atomic saves, damage detection, no code on load, secrets."""

from __future__ import annotations

import io
import math
import os
import pickle
import subprocess
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError
from hippo_dask.storage import FORMAT_VERSION, MAGIC, CheckpointStore, FsspecCheckpointStore
from hippo_dask.storage._checkpoints import decode, encode

SECRET = "sEcReT-9f3a7c-never-print-me"
HEADER_SIZE = 52


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecCheckpointStore:
    """A store on each backend: a local folder, fsspec's memory filesystem, moto S3."""
    if request.param == "local":
        return FsspecCheckpointStore(str(tmp_path / "ckpt"))
    if request.param == "memory":
        return FsspecCheckpointStore(f"memory://test-{uuid.uuid4().hex}/ckpt")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    options = server.storage_options | {"secret": SECRET}  # moto accepts any credentials
    return FsspecCheckpointStore(f"{bucket}/run/ckpt", options)


def reopen(
    store: FsspecCheckpointStore, options: dict[str, Any] | None = None
) -> FsspecCheckpointStore:
    """A second store on the same folder, as another process would open it."""
    return FsspecCheckpointStore(store.url, options if options is not None else store._options)


def raw(store: FsspecCheckpointStore, uri: str) -> bytes:
    data: bytes = store.fs.cat_file(store.fs._strip_protocol(uri))
    return data


def overwrite(store: FsspecCheckpointStore, uri: str, data: bytes) -> None:
    store.fs.pipe_file(store.fs._strip_protocol(uri), data)


def listing(store: FsspecCheckpointStore) -> list[str]:
    """Every file name under the store's folder, hidden ones included."""
    if not store.fs.exists(store.folder):
        return []
    store.fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in store.fs.find(store.folder, withdirs=False))


def rich_state() -> dict[str, Any]:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "float": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
        "double": torch.tensor([1.5, -0.0, math.inf], dtype=torch.float64),
        "int": torch.arange(5, dtype=torch.int64),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar_tensor": torch.tensor(3.25),
        "empty": torch.zeros(0, 7),
        "grad": torch.ones(2, requires_grad=True),
        "base": base,
        "view": base.t(),
        "np_float32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "np_int64": np.arange(4, dtype=np.int64),
        "np_bool": np.array([True, False, True]),
        "np_0d": np.array(7.5),
        "np_fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "np_scalars": [np.float32(1.25), np.int64(-3), np.bool_(True), np.float64(2.0)],
        "np_dtype": np.dtype("float16"),
        "python": {"int": 2**70, "float": 0.1, "str": "ünïcode", "bool": False, "none": None},
        "bytes": b"\x00\xffraw",
        "complex": 1 + 2j,
        "nested": {"list": [1, [2.0, (3, "x")]], "tuple": (1, (2, [3])), "empty": ((), [], {})},
        "ordered": OrderedDict([("b", 1), ("a", torch.zeros(1))]),
    }


def assert_exactly_equal(expected: Any, actual: Any, where: str = "state") -> None:
    """Equal values *and* equal types, recursively (tensors: dtype, shape, bits, grad flag)."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.requires_grad == expected.requires_grad, where
        assert torch.equal(actual.detach(), expected.detach()), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.flags.f_contiguous == expected.flags.f_contiguous, where
        assert np.array_equal(actual, expected), where
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype and actual == expected, where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_exactly_equal(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_exactly_equal(e, a, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert math.copysign(1, actual) == math.copysign(1, expected), where
        assert actual == expected, where
    else:
        assert actual == expected, where


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_store_is_a_checkpoint_store(store: FsspecCheckpointStore) -> None:
    assert isinstance(store, CheckpointStore)
    assert SECRET not in repr(store)


def test_round_trip_is_exact_and_preserves_types(store: FsspecCheckpointStore) -> None:
    state = rich_state()
    uri = store.save("rich", state)
    loaded = reopen(store).load(uri)
    assert_exactly_equal(state, loaded)
    # torch keeps views of one storage as views of one storage.
    storage = loaded["base"].untyped_storage().data_ptr()
    assert loaded["view"].untyped_storage().data_ptr() == storage
    assert loaded["view"].stride() == (1, 4)


def test_save_returns_a_full_uri(store: FsspecCheckpointStore, tmp_path: Path) -> None:
    uri = store.save("abc-123.step_7", {"x": 1})
    assert uri == store.uri("abc-123.step_7")
    assert uri.endswith("/abc-123.step_7.ckpt")
    if store._local:
        assert uri == str(tmp_path / "ckpt" / "abc-123.step_7.ckpt") and os.path.isabs(uri)
    elif store.url.startswith("memory://"):
        assert uri.startswith("memory:///test-")
    else:
        assert uri.startswith(store.url.split("/run/")[0] + "/run/ckpt/")
    assert store.exists(uri)


def test_saving_the_same_name_twice_is_harmless(store: FsspecCheckpointStore) -> None:
    state = {"w": torch.arange(3.0), "step": 5}
    first = store.save("same", state)
    data = raw(store, first)
    second = store.save("same", state)
    assert first == second
    assert raw(store, second) == data  # torch.save output is deterministic
    assert listing(store) == ["same.ckpt"]
    assert_exactly_equal(state, store.load(second))


def test_concurrent_saves_of_one_name_leave_one_valid_file(store: FsspecCheckpointStore) -> None:
    state = {"w": torch.arange(1000.0)}
    with ThreadPoolExecutor(4) as pool:
        uris = list(pool.map(lambda _: store.save("hot", state), range(8)))
    assert len(set(uris)) == 1
    assert listing(store) == ["hot.ckpt"]
    assert_exactly_equal(state, store.load(uris[0]))


def test_exists_and_delete(store: FsspecCheckpointStore) -> None:
    uri = store.save("gone", {"x": 1})
    other = reopen(store)
    assert other.exists(uri)
    other.delete(uri)
    assert not store.exists(uri)  # asks storage, not a cache
    store.delete(uri)  # deleting a missing checkpoint does nothing
    with pytest.raises(CheckpointNotFoundError, match="gone.ckpt") as info:
        store.load(uri)
    assert isinstance(info.value, FileNotFoundError)


def test_never_written_checkpoint_is_not_found(store: FsspecCheckpointStore) -> None:
    uri = store.uri("never")
    assert not store.exists(uri)
    with pytest.raises(CheckpointNotFoundError, match=r"never\.ckpt"):
        store.load(uri)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "x" * 201, "sp ace", "ü"])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path))
    with pytest.raises(ValueError, match="`name`"):
        store.save(name, {})
    assert list(tmp_path.iterdir()) == []


def test_uri_of_another_filesystem_is_refused(tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path))
    with pytest.raises(ValueError, match="not on this store's filesystem"):
        store.load("memory:///elsewhere/x.ckpt")


def test_file_url_and_plain_path_are_the_same_store(tmp_path: Path) -> None:
    uri = FsspecCheckpointStore(f"file://{tmp_path}/ckpt").save("a", {"x": 2})
    assert uri == str(tmp_path / "ckpt" / "a.ckpt")
    assert FsspecCheckpointStore(str(tmp_path / "ckpt")).load(uri) == {"x": 2}
    assert FsspecCheckpointStore(str(tmp_path)).load(f"file://{uri}") == {"x": 2}


def test_unknown_protocol_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="nosuchproto"):
        FsspecCheckpointStore("nosuchproto://bucket/ckpt")


# ---------------------------------------------------------------------------------------------
# Atomicity
# ---------------------------------------------------------------------------------------------


def test_a_state_that_cannot_be_pickled_writes_nothing(store: FsspecCheckpointStore) -> None:
    state = {"ok": torch.zeros(3), "bad": lambda x: x}
    with pytest.raises(TypeError, match="cannot be saved"):
        store.save("broken", state)
    assert not store.exists(store.uri("broken"))
    assert listing(store) == []


class _Custom:
    def __init__(self) -> None:
        self.value = 1


def test_a_state_that_could_not_be_loaded_safely_is_refused_at_save(
    store: FsspecCheckpointStore,
) -> None:
    with pytest.raises(TypeError, match=r"_Custom.*weights_only"):
        store.save("custom", {"x": _Custom()})
    assert listing(store) == []


def test_local_save_failing_midway_leaves_no_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FsspecCheckpointStore(str(tmp_path / "ckpt"))
    good = store.save("kept", {"version": 1})

    def broken_fsync(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match=r"new\.ckpt.*No space left"):
        store.save("new", {"version": 2})
    with pytest.raises(StorageError, match="No space left"):
        store.save("kept", {"version": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["kept.ckpt"]
    assert store.load(good) == {"version": 1}  # the old file is intact


def test_local_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path / "deep" / "ckpt"))  # folders made on save
    for i in range(3):
        store.save(f"c{i}", {"i": i})
    assert sorted(p.name for p in (tmp_path / "deep" / "ckpt").iterdir()) == [
        "c0.ckpt",
        "c1.ckpt",
        "c2.ckpt",
    ]


# ---------------------------------------------------------------------------------------------
# Damage
# ---------------------------------------------------------------------------------------------


def test_header_layout() -> None:
    payload = b"payload bytes"
    data = encode(payload)
    assert data[:8] == MAGIC and len(data) == HEADER_SIZE + len(payload)
    assert int.from_bytes(data[8:12], "big") == FORMAT_VERSION
    assert int.from_bytes(data[12:20], "big") == len(payload)
    assert decode(data, "x") == payload


def test_a_flipped_payload_byte_is_detected(store: FsspecCheckpointStore) -> None:
    uri = store.save("flip", {"w": torch.arange(100.0)})
    data = bytearray(raw(store, uri))
    data[HEADER_SIZE + len(data[HEADER_SIZE:]) // 2] ^= 0x01
    overwrite(store, uri, bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"flip\.ckpt.*SHA-256") as info:
        reopen(store).load(uri)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("keep", [0, 5, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10, -1])
def test_a_truncated_file_is_detected(store: FsspecCheckpointStore, keep: int) -> None:
    uri = store.save("cut", {"w": torch.arange(100.0)})
    data = raw(store, uri)
    overwrite(store, uri, data[:keep])
    with pytest.raises(CorruptCheckpointError, match=r"cut\.ckpt.*(truncated|not a hippo_dask)"):
        store.load(uri)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"PK\x03\x04" + d[4:], "not a hippo_dask checkpoint"),
        (lambda d: d[:8] + (99).to_bytes(4, "big") + d[12:], "format version 99"),
        (lambda d: d + b"extra", "longer than its header"),
        (lambda d: d[:20] + bytes(32) + d[52:], "SHA-256"),
    ],
    ids=["magic", "version", "trailing", "digest"],
)
def test_header_damage_is_detected(
    tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    store = FsspecCheckpointStore(str(tmp_path))
    uri = store.save("hdr", {"x": 1})
    Path(uri).write_bytes(damage(Path(uri).read_bytes()))
    with pytest.raises(CorruptCheckpointError, match=message) as info:
        store.load(uri)
    assert uri in str(info.value)


def test_a_valid_header_over_garbage_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path))
    uri = store.uri("garbage")
    Path(uri).write_bytes(encode(b"\x00not a torch file at all"))
    with pytest.raises(CorruptCheckpointError, match=r"garbage\.ckpt"):
        store.load(uri)


# ---------------------------------------------------------------------------------------------
# No code runs on load
# ---------------------------------------------------------------------------------------------


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """Pickles whose loading would create ``marker``, and the global each needs."""

    class System:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    class Call:
        def __reduce__(self) -> Any:
            return (subprocess.call, (["touch", str(marker)],))

    class Exec:
        def __reduce__(self) -> Any:
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    class Touch:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    def torch_file(obj: Any) -> bytes:
        buffer = io.BytesIO()
        torch.save({"model": torch.zeros(2), "payload": obj}, buffer)
        return buffer.getvalue()

    return {
        "os.system": (torch_file(System()), "system"),
        "subprocess.call": (torch_file(Call()), ".call"),  # pickled as commands.call
        "builtins.exec": (torch_file(Exec()), "exec"),
        "pathlib.Path.touch": (torch_file(Touch()), "getattr"),
        "arbitrary class": (torch_file(_Custom()), "_Custom"),
        "legacy pickle": (pickle.dumps(System(), protocol=2), "system"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "os.system",
        "subprocess.call",
        "builtins.exec",
        "pathlib.Path.touch",
        "arbitrary class",
        "legacy pickle",
    ],
)
def test_a_malicious_checkpoint_is_refused_and_runs_nothing(
    store: FsspecCheckpointStore, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    payload, global_name = _payloads(marker)[kind]
    uri = store.save("victim", {"model": torch.zeros(2)})
    overwrite(store, uri, encode(payload))  # valid header and checksum: only weights_only stands
    with pytest.raises(CorruptCheckpointError) as info:
        store.load(uri)
    message = str(info.value)
    assert "victim.ckpt" in message and "refused" in message and "run code" in message
    assert global_name in message
    assert "weights_only` set to `False`" not in message  # no advice to turn the check off
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Credentials and unreachable storage
# ---------------------------------------------------------------------------------------------


def test_credentials_never_reach_files_or_messages(s3_server: Any, s3_bucket: str) -> None:
    options = s3_server.storage_options | {"key": "AKIA-" + SECRET, "secret": SECRET}
    store = FsspecCheckpointStore(f"{s3_bucket}/ckpt", options)
    uri = store.save("c", {"x": torch.ones(2)})
    assert SECRET not in raw(store, uri).decode("latin-1")
    store.delete(uri)
    with pytest.raises(CheckpointNotFoundError) as info:
        store.load(uri)
    assert SECRET not in str(info.value) and info.value.__cause__ is None
    assert SECRET not in repr(store) and SECRET not in str(vars(store).get("url"))


UNREACHABLE = {
    "key": "AKIA-" + SECRET,
    "secret": SECRET,
    "endpoint_url": "http://127.0.0.1:9",
    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 1},
}


@pytest.mark.parametrize("operation", ["save", "load", "exists", "delete"])
def test_unreachable_endpoint_is_a_quick_storage_error(operation: str) -> None:
    store = FsspecCheckpointStore("s3://nowhere-bucket/ckpt", UNREACHABLE)
    uri = store.uri("c")
    calls: dict[str, Callable[[], object]] = {
        "save": lambda: store.save("c", {"x": 1}),
        "load": lambda: store.load(uri),
        "exists": lambda: store.exists(uri),
        "delete": lambda: store.delete(uri),
    }
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        calls[operation]()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert uri in message and "127.0.0.1:9" in message
    assert isinstance(info.value, OSError)
    assert SECRET not in message and info.value.__cause__ is None
    assert SECRET not in repr(info.value.__context__)


def test_secrets_are_masked_in_messages(tmp_path: Path) -> None:
    store = FsspecCheckpointStore(str(tmp_path), {"password": SECRET, "nested": {"token": "abcd"}})
    assert store._redact(f"x {SECRET} y abcd") == "x *** y ***"

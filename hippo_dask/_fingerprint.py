"""What identifies a trainer's code: the digest that keeps results of edited code apart.

A study salts every state and checkpoint name with its trainer's fingerprint
(:mod:`hippo_dask.execution._identity`), so results trained by one version of the code are
never served to another. The fingerprint must therefore change with any edit that can change
results, and only then; :func:`trainer_fingerprint` states the rule.

The user's own code is what a user edits between runs: every module whose file lies outside
the standard library, outside any ``site-packages`` or ``dist-packages`` folder (installed
packages, which change only with their version), and outside hippo_dask itself. A package
installed in editable mode from the user's checkout counts as the user's own code.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import site
import sys
import sysconfig
import types
import warnings
from pathlib import Path

from hippo_dask.errors import HippoWarning

__all__ = ["code_files", "trainer_fingerprint"]

_LIBRARY_FOLDERS = frozenset({"site-packages", "dist-packages"})
_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules"})


def trainer_fingerprint(trainer_cls: type, version: str | None, *, stacklevel: int = 2) -> str:
    """The fingerprint of ``trainer_cls``'s code: ``"<qualname>:<digest>"``.

    The rule:

    - With ``version`` (``Study(..., version="2")``): ``"<qualname>:v:<version>"``, and no code
      is read. The user declares which edits are compatible.
    - Otherwise a SHA-256 digest (16 hex digits) of the trainer class's own source and of the
      files of the user's own code it uses (:func:`code_files`): the modules that define the
      trainer class and its base classes, the user modules those reach through their globals
      (imported modules, and the modules of imported functions, classes and objects), to any
      depth, and, for each of them that belongs to a package, every ``.py`` file of its
      top-level package (so a helper imported inside a method counts too; hidden folders,
      caches and virtual environments inside it do not). Editing the model builder, a base
      class or a helper in the same module or package changes the fingerprint; upgrading an
      installed package does not. A trainer that uses none of the user's files (one shipped
      in a package) keeps the digest of its class source alone, as earlier versions of
      hippo_dask computed it, so their results stay reusable.

    The digest covers each file's bytes under its path relative to the folder holding its
    top-level package or module, in sorted order: it is the same in every process and on
    every machine with the same code, whatever the hash seed, the import order or where the
    checkout lies.

    A helper in a top-level module (not a package) that the trainer's code imports only inside
    a function is not seen: import it at module level, or keep it in a package.

    Parameters
    ----------
    trainer_cls
        The trainer class.
    version
        The declared code version, or ``None`` to derive one from the code.
    stacklevel
        For the warning: 2 points at the caller of this function.

    Warns
    -----
    HippoWarning
        If the trainer class's source cannot be read (defined in a REPL, a notebook, or a
        module shipped as ``.pyc`` only): edits to it cannot be detected, so declare
        ``version=``.
    """
    name = trainer_cls.__qualname__
    if version is not None:
        return f"{name}:v:{version}"
    own = _class_source(trainer_cls)
    files = code_files(trainer_cls)
    if own is not None and not files:  # a trainer of a library: as earlier versions named it
        return f"{name}:{hashlib.sha256(own.encode()).hexdigest()[:16]}"
    digest = hashlib.sha256(b"hippo-dask trainer fingerprint 2\0")
    if own is None:
        warnings.warn(
            f"cannot read the source of trainer class {trainer_cls.__module__}.{name} (defined "
            "in a REPL or notebook, or in a module shipped without its .py file), so edits to "
            "it cannot be detected and results of edited code would be reused as if unchanged. "
            'Declare the code\'s version instead: Study(..., version="1"), and change it '
            "whenever an edit can change results.",
            HippoWarning,
            stacklevel=stacklevel + 1,
        )
        own = f"{trainer_cls.__module__}.{name}\0{_method_sources(trainer_cls)}"
    _feed(digest, "class", own.encode())
    for key, path in files:
        _feed(digest, key, path.read_bytes())
    return f"{name}:{digest.hexdigest()[:16]}"


def code_files(trainer_cls: type) -> list[tuple[str, Path]]:
    """The files of the user's own code that ``trainer_cls`` uses, as ``(key, path)`` sorted by
    key; the key is the path relative to the folder that holds the top-level package or module.

    See :func:`trainer_fingerprint` for which files these are.
    """
    start = [sys.modules.get(c.__module__) for c in trainer_cls.__mro__]
    seen: dict[str, types.ModuleType] = {}
    todo = [m for m in start if m is not None and _is_user_module(m)]
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        todo.extend(
            m for m in _referenced_modules(module) if m.__name__ not in seen and _is_user_module(m)
        )
    files: dict[str, Path] = {}
    for module in seen.values():
        for key, path in _module_files(module):
            files.setdefault(key, path)
    return sorted(files.items())


def _feed(digest: hashlib._Hash, key: str, data: bytes) -> None:
    """Add one named part; lengths keep ``("ab", "c")`` and ``("a", "bc")`` apart."""
    name = key.encode()
    digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big") + data)


def _class_source(cls: type) -> str | None:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return None


def _method_sources(cls: type) -> str:
    """Sources of the functions defined in ``cls``'s body that can be read (a notebook keeps
    its cells' lines, a plain REPL does not), by name."""
    parts = []
    for attr, value in sorted(vars(cls).items()):
        function = getattr(value, "__func__", value)  # classmethod, staticmethod
        if isinstance(function, types.FunctionType):
            try:
                parts.append(f"{attr}\0{inspect.getsource(function)}")
            except (OSError, TypeError):
                parts.append(f"{attr}\0?")
    return "\0".join(parts)


def _referenced_modules(module: types.ModuleType) -> list[types.ModuleType]:
    """Modules ``module``'s globals name: imported modules, and where imported functions,
    classes and objects come from."""
    found = []
    for value in list(vars(module).values()):
        if isinstance(value, types.ModuleType):
            found.append(value)
            continue
        owner = value if isinstance(value, (type, types.FunctionType)) else type(value)
        name = owner.__dict__.get("__module__") if isinstance(owner, type) else owner.__module__
        if isinstance(name, str) and name in sys.modules:
            found.append(sys.modules[name])
    return found


@functools.cache
def _library_folders() -> tuple[str, ...]:
    """Folders of the standard library, installed packages and hippo_dask itself."""
    folders = {
        sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    folders.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    folders.add(site.getusersitepackages())
    folders.add(os.path.dirname(os.path.abspath(__file__)))  # hippo_dask, editable or not
    return tuple(sorted(os.path.realpath(f) for f in folders if f))


def _is_user_path(path: str) -> bool:
    real = os.path.realpath(path)
    if _LIBRARY_FOLDERS & set(Path(real).parts):
        return False
    return not any(real == f or real.startswith(f + os.sep) for f in _library_folders())


def _is_user_module(module: types.ModuleType) -> bool:
    if module.__name__.partition(".")[0] == "hippo_dask":
        return False
    origin = _origin(module)
    return origin is not None and _is_user_path(origin)


def _origin(module: types.ModuleType) -> str | None:
    """A file or folder the module comes from (``None`` for built-in and frozen modules, and a
    REPL's or notebook's ``__main__``)."""
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and os.path.exists(file):
        return file
    paths = list(getattr(module, "__path__", None) or [])
    return str(paths[0]) if paths else None


def _skipped(folder: Path) -> bool:
    """Folders of a package that are not its code: caches, hidden folders, installed packages
    and virtual environments kept inside it."""
    name = folder.name
    return (
        name in _SKIPPED_FOLDERS
        or name in _LIBRARY_FOLDERS
        or name.startswith(".")
        or (folder / "pyvenv.cfg").exists()
    )


def _module_files(module: types.ModuleType) -> list[tuple[str, Path]]:
    """The module's own file, and every ``.py`` file of its top-level package if it has one."""
    top = module.__name__.partition(".")[0]
    package = sys.modules.get(top)
    folders = list(getattr(package, "__path__", None) or []) if package is not None else []
    if module.__name__ == "__main__" or not folders:
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.isfile(file):
            return [(os.path.basename(file), Path(file))]
        return []
    out = []
    for folder in sorted({os.path.realpath(f) for f in folders}):
        if not _is_user_path(folder):
            continue
        for here, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not _skipped(Path(here) / d))
            for name in sorted(names):
                if name.endswith(".py"):
                    path = Path(here) / name
                    out.append((f"{top}/{path.relative_to(folder).as_posix()}", path))
    own = getattr(module, "__file__", None)  # e.g. a .pyc-only module or an extension
    if isinstance(own, str) and os.path.isfile(own) and not own.endswith(".py"):
        folder = next(
            (f for f in folders if os.path.realpath(own).startswith(os.path.realpath(f) + os.sep)),
            None,
        )
        if folder is not None:
            relative = Path(os.path.realpath(own)).relative_to(os.path.realpath(folder))
            out.append((f"{top}/{relative.as_posix()}", Path(own)))
    return out

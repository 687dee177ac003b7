"""Lazy public APIs: a package names its exports, and each is imported on first use.

Keeps ``import gpp_cubes`` (and the ``gpp`` command's start) free of Dask, GDAL, pandas and
JAX until a name that needs them is touched (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``exports`` (name -> module).

    Parameters
    ----------
    package : str
        The package's ``__name__`` (named in the AttributeError).
    exports : mapping of str to str
        Public name -> the module that defines it.
    """

    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted({*exports, "__all__", "__doc__", "__name__"})

    return getattr_, dir_

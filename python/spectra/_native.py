"""Loads the compiled core, ``spectra._core``, or explains how to build it."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

BUILD_HINT = (
    "spectra's native module (spectra._core) is not built or failed to load.\n"
    "Build it against the torch you have installed:\n"
    "    make setup                                   # from a source checkout: venv, deps, build\n"
    "or\n"
    "    pip install --no-build-isolation -e .        # needs cmake, a C++20 compiler and libeigen3-dev\n"
    "Diagnose with: python -m spectra.info"
)


class NativeModuleError(ImportError):
    """Raised by ``import spectra`` when ``spectra._core`` cannot be imported."""


def _running_info() -> bool:
    # `python -m spectra.info` must still report *why* the core is missing, so the package
    # import tolerates a missing core for that one entry point only.
    argv = getattr(sys, "orig_argv", [])
    return "-m" in argv and "spectra.info" in argv


def load_core() -> ModuleType | None:
    """Imports ``spectra._core``; returns None only under ``python -m spectra.info``."""
    import torch  # noqa: F401  (loads libtorch before the extension that links against it)

    try:
        _core = importlib.import_module("spectra._core")
    except ImportError as error:
        global load_error
        load_error = error
        if _running_info():
            return None
        raise NativeModuleError(f"{BUILD_HINT}\nUnderlying error: {error}") from error
    return _core


load_error: ImportError | None = None

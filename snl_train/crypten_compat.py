"""Import CrypTen 0.4.1 under current torch: the one place that knows about its breakage.

CrypTen 0.4.1 imports ``torch.onnx._internal.registration``, which newer torch moved to
``torch.onnx._internal.torchscript_exporter.registration``. Aliasing the moved module in
``sys.modules`` before the import is all it needs. CrypTen's declared dependencies are broken
too (the deprecated ``sklearn`` package, a torchvision that pulls another torch), hence the
install line in :data:`INSTALL_HINT`.

Example::

    >>> crypten = import_crypten()   # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

INSTALL_HINT = ("CrypTen is not installed; install it with: pip install onnx omegaconf pyyaml "
                "&& pip install --no-deps crypten==0.4.1 (or: make setup)")

_OLD = "torch.onnx._internal.registration"
_NEW = "torch.onnx._internal.torchscript_exporter.registration"


class CryptenMissing(ImportError):
    """CrypTen (or one of the packages it needs) is not installed; the message says how to."""


def crypten_available() -> bool:
    """Whether ``import crypten`` can be attempted (the package is installed); imports nothing."""
    try:
        return importlib.util.find_spec("crypten") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["crypten"] set to None to block it
        return False


def require_crypten() -> None:
    """Raise :class:`CryptenMissing` (one line: how to install it) unless CrypTen is installed."""
    if not crypten_available():
        raise CryptenMissing(INSTALL_HINT)


def import_crypten():
    """Return the ``crypten`` module, aliasing torch's moved ONNX registration module first.

    Raises:
        CryptenMissing: CrypTen or one of onnx / omegaconf / pyyaml is not installed.
    """
    if _OLD not in sys.modules:
        try:
            sys.modules[_OLD] = importlib.import_module(_NEW)
        except ImportError:
            pass  # an older torch that still has the module where CrypTen looks for it
    try:
        return importlib.import_module("crypten")
    except ImportError as error:
        raise CryptenMissing(f"{INSTALL_HINT} ({error})") from error

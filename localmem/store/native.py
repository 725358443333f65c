"""What the native core was built with and runs here: ``build_info()``.

Imported by every wrapper of ``localmem._core`` (the index, the store): a kernel asked for
by ``LOCALMEM_KERNEL`` that this CPU cannot run is a warning the first time the core loads.
"""

from __future__ import annotations

import warnings
from typing import Any

from localmem import _core


def build_info() -> dict[str, Any]:
    """Version, compiler, CPU features, and the SIMD kernel in use (``"kernel"``)."""
    return dict(_core.build_info())


def version() -> str:
    return str(_core.build_info()["version"])


if _core.build_info()["kernel_override_error"]:
    warnings.warn(_core.build_info()["kernel_override_error"], RuntimeWarning, stacklevel=2)

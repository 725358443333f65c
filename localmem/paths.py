"""Where stores live on disk."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

STORE_ENV = "LOCALMEM_STORE"


def default_store_path() -> Path:
    """The store used when none is named: ``$LOCALMEM_STORE``, else the user data dir."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("localmem")) / "default"

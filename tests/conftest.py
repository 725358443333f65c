from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """No test touches the user's real store or cache."""
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LOCALMEM_CACHE", str(tmp_path / "cache"))
    for var in (
        "LOCALMEM_LLM",
        "LOCALMEM_EMBEDDING",
        "LOCALMEM_RANKER",
        "LOCALMEM_PASSPHRASE",
        "LOCALMEM_NEW_PASSPHRASE",
        "LOCALMEM_EXPORT_PASSPHRASE",
    ):  # the user's own
        monkeypatch.delenv(var, raising=False)
    # The OS keyring, as a real keyring backend (keyrings.alt's file) under tmp_path: no test
    # reads or writes the user's own keyring, and child processes inherit the same one.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def pytest_terminal_summary(terminalreporter):
    from tests import tally

    if tally.counts:
        terminalreporter.section("durability tally")
        for name, n in sorted(tally.counts.items()):
            terminalreporter.write_line(f"{name}: {n:,}")


# Tests that fork the test process run first: a fork copies only the calling thread, and
# after the LLM, ONNX or Textual tests the process holds their worker threads (OpenMP,
# onnxruntime), whose locks a child can inherit held. localmem itself never forks.
_FORKING = ("test_crash.py", "test_store.py", "test_aead.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda it: 0 if it.path.name in _FORKING else 1)  # stable: order kept

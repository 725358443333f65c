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


def pytest_terminal_summary(terminalreporter):
    from tests import tally

    if tally.counts:
        terminalreporter.section("durability tally")
        for name, n in sorted(tally.counts.items()):
            terminalreporter.write_line(f"{name}: {n:,}")

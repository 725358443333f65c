"""Every ```python block of README.md runs as written: each in a fresh process of this
Python (the venv's), in an empty working directory, with HOME, XDG_DATA_HOME, LOCALMEM_STORE
and TMPDIR inside tmp_path, so a block that uses the default store writes there, and one that
writes into the home directory fails. Only the embedded models are used (no network): the
Assistant's block loads the embedded GGUF chat model, which takes a few seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    """The bodies of README.md's fenced ```lang blocks, in order."""
    fence = re.compile(rf"^```{lang}[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
    return fence.findall(README.read_text(encoding="utf-8"))


PYTHON = blocks("python")


def block_id(i: int, code: str) -> str:
    """The block's index and its first line of code past the imports and comments."""
    lines = [ln.strip() for ln in code.splitlines()]
    code_lines = [ln for ln in lines if ln and not ln.startswith(("#", "import ", "from "))]
    first = code_lines[0] if code_lines else (lines[0] if lines else "")
    return f"{i}:{first[:40].rstrip()}"


def test_readme_has_python_blocks() -> None:
    assert PYTHON, "README.md has no ```python block: the test below would check nothing"


@pytest.mark.parametrize("code", PYTHON, ids=[block_id(i, c) for i, c in enumerate(PYTHON)])
def test_readme_python_block_runs(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (("XDG_DATA_HOME", ".local/share"), ("XDG_CACHE_HOME", ".cache"),
                     ("XDG_CONFIG_HOME", ".config")):  # fmt: skip
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=work, env=dict(os.environ), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, (
        f"this README block failed (exit {out.returncode}):\n{code}\n"
        f"--- stdout ---\n{out.stdout[-2000:]}\n--- stderr ---\n{out.stderr[-4000:]}"
    )
    written = sorted(str(p.relative_to(tmp_path)) for p in [*home.rglob("*"), *work.rglob("*")])
    assert not written, f"the block wrote outside the store and the temporary dir: {written}"


def test_readme_json_blocks_parse() -> None:
    for text in blocks("json"):
        json.loads(text)

"""Every file localmem creates is 0600 and every directory 0700, whatever the umask: the
store's log, arena, index, manifest, catalog (and SQLite's -wal/-shm), exports, the cache
(issue 21, defect 7)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

API_SCRIPT = r"""
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from localmem import Memory
from localmem.portable import export_jsonl, import_file
from localmem.files import private_output
from localmem.testing import HashEmbedder
root = Path(sys.argv[1])
with Memory.open(root / "s", embedder=HashEmbedder(), sync="off") as mem:
    ids = [mem.remember(f"note {i} about tea and trains", tags=["t"]).id for i in range(300)]
    mem.recall("tea", k=3)
    mem.forget(ids[0]); mem.restore(ids[0]); mem.forget(ids[1], purge=True)
    mem.store.checkpoint()
    mem.consolidate()
    mem.compact()
    mem.repair()
    with private_output(root / "export.jsonl") as f:
        export_jsonl(mem, f)
with Memory.open(root / "t", embedder=HashEmbedder(), sync="off") as mem:
    import_file(mem, root / "export.jsonl")
"""


def modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


@pytest.mark.parametrize("umask", ["000", "022"])
def test_every_file_under_the_store_and_every_export_is_private(tmp_path, umask):
    exe = str(Path(sys.executable).parent / "localmem")
    env = {**os.environ, "LOCALMEM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", API_SCRIPT, str(tmp_path), umask],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    # The CLI with the real embedder, and the cache it fills (checksum stamps, ...).
    real = tmp_path / "real"
    for cmd in (
        ["remember", "Ana likes tea", "--store", str(real)],
        ["export", "-o", str(tmp_path / "cli-export.jsonl"), "--store", str(real)],
        ["import", str(tmp_path / "cli-export.jsonl"), "--store", str(tmp_path / "real2")],
        ["repair", "--store", str(real)],
    ):
        done = subprocess.run(["sh", "-c", f'umask {umask}; exec "$@"', "sh", exe, *cmd],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert done.returncode == 0, (cmd, done.stderr[-2000:])
    found = modes(tmp_path)
    assert any(name.endswith("catalog.sqlite") for name in found)
    assert any("cache" in name and name.endswith(".json") for name in found)
    bad = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)
        and not (tmp_path / name).is_symlink()
    }
    # pytest's own tmp dirs are not ours: only what the runs created is checked.
    assert not bad, bad


def test_export_does_not_follow_a_planted_temp_symlink(tmp_path):
    exe = str(Path(sys.executable).parent / "localmem")
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    out_path = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.tmp").symlink_to(victim)
    subprocess.run([exe, "remember", "Ana likes tea", "--store", str(tmp_path / "s")],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    done = subprocess.run([exe, "export", "-o", str(out_path), "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "do not touch"
    assert "Ana likes tea" in out_path.read_text()
    assert stat.S_IMODE(out_path.stat().st_mode) == 0o600

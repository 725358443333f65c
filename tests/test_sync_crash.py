"""Issue 26 must-show: a replica killed (SIGKILL) while it exports or imports loses and
duplicates nothing: after a restart and another sync, both devices hold exactly the
memories that were acknowledged, each once, under the same ids. 25 trials of each."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from localmem import Memory
from localmem.testing import HashEmbedder

TRIALS = 25
N = 1500

CHILD = textwrap.dedent(
    """
    import sys
    from localmem import Memory
    from localmem.testing import HashEmbedder
    store, folder, code, mode, n = sys.argv[1:6]
    m = Memory.open(store, embedder=HashEmbedder(384), forgetting=False)
    if mode == "export":
        m.sync_join(folder, code)
        m.remember_many([{"text": f"written on b {i}"} for i in range(int(n))])
        print("acknowledged", flush=True)
        print("syncing", flush=True)
        m.sync()
    else:
        print("syncing", flush=True)
        m.sync_join(folder, code)  # its first step imports everything a wrote
    print("done", flush=True)
    """
)


def _open(path: Path) -> Memory:
    return Memory.open(path, embedder=HashEmbedder(384), forgetting=False)


def _child(store: Path, folder: Path, code: str, mode: str, rng: random.Random) -> bool:
    """Runs the child and kills it at a random moment of its sync; True if the kill
    landed before it finished."""
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store), str(folder), code, mode, str(N)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = ""
    while line.strip() != "syncing":
        line = p.stdout.readline()
        assert line, "the child ended before syncing"
    time.sleep(rng.uniform(0, 0.12 if mode == "export" else 0.4))  # within the sync's time
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return p.returncode == -signal.SIGKILL


def _memories(m: Memory) -> dict[int, str]:
    got = [(it.id, it.text) for it in m.list(limit=100_000)]
    assert len({t for _, t in got}) == len(got), "a memory is held twice"
    return dict(got)


def test_kill_during_export_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(2601)
    landed = 0
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        with _open(root / "a") as a:
            code = a.sync_init(root / "folder")
        landed += _child(root / "b", root / "folder", code, "export", rng)
        with _open(root / "b") as b:  # restarted: its memories are all there, once
            mine = _memories(b)
            assert sorted(mine.values()) == sorted(f"written on b {i}" for i in range(N))
            b.sync()
        with _open(root / "a") as a:
            a.sync()
            assert _memories(a) == mine  # the same ids, the same texts, each once
    print(f"\nexport: {TRIALS} trials, {landed} killed mid-sync; 0 lost, 0 duplicated")
    assert landed >= TRIALS // 2, f"only {landed} kills landed during the export"


def test_kill_during_import_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(2602)
    landed = 0
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        with _open(root / "a") as a:
            a.remember_many([{"text": f"written on a {i}"} for i in range(N)])
            code = a.sync_init(root / "folder")
            want = _memories(a)
        landed += _child(root / "b", root / "folder", code, "import", rng)
        with _open(root / "b") as b:
            if b.sync_status() is None:  # killed before the join was saved
                b.sync_join(root / "folder", code)
            else:
                b.sync()
            assert _memories(b) == want
            assert b.sync()["exported"] == 0  # nothing echoed back
    print(f"\nimport: {TRIALS} trials, {landed} killed mid-sync; 0 lost, 0 duplicated")
    assert landed >= TRIALS // 2, f"only {landed} kills landed during the import"

"""Processes opening and reading a store while others write: no "database is locked", no
failure at all (issue 21, defect 4). Before, 25 of 160 opens by four processes failed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from localmem import Memory
from localmem.testing import HashEmbedder
from tests import tally

WORKER = r"""
import json, sys, time, traceback
from localmem import Memory
from localmem.testing import HashEmbedder
path, role, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
ok, failed, errors, n = 0, 0, [], 0
while time.time() < until:
    n += 1
    try:
        with Memory.open(path, embedder=HashEmbedder(), forgetting=False) as mem:
            if role == "writer":
                for i in range(5):
                    mem.remember(f"written by {sys.argv[4]} number {n}.{i} about tea")
            else:
                mem.list(limit=5)
                mem.recall("tea", k=3)
                len(mem)
        ok += 1
    except Exception as e:
        failed += 1
        errors.append(f"{type(e).__name__}: {e}"[:300])
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5]}))
"""


def test_eight_openers_and_two_writers_for_thirty_seconds_never_fail(tmp_path):
    path = tmp_path / "s"
    with Memory.open(path, embedder=HashEmbedder(), forgetting=False) as mem:
        mem.remember_many([{"text": f"seed {i} about tea"} for i in range(200)])
    until = time.time() + 30
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), role, str(until), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, role in enumerate(["writer"] * 2 + ["reader"] * 8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    opens = sum(r["ok"] + r["failed"] for r in results)
    failures = [e for r in results for e in r["errors"]]
    tally.add("open race: opens", opens)
    tally.add("open race: failures", sum(r["failed"] for r in results))
    assert not failures, failures
    assert all(r["ok"] > 0 for r in results)
    with Memory.open(path, embedder=HashEmbedder(), forgetting=False) as mem:
        assert len(mem) == 200 + 5 * sum(r["ok"] for r in results[:2])

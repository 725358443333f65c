"""A full disk: a clear StorageFullError naming the path and the free space, a store that
still opens for reading, and a retry with the same key= that cannot duplicate (issue 21,
defect 5). Runs on a small tmpfs mounted in a private mount namespace (unshare -rm)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    r"""
    import json, os, subprocess, sys
    from pathlib import Path
    from localmem import Memory
    from localmem.errors import LocalmemError, StorageFullError
    from localmem.testing import HashEmbedder

    root = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(root)], check=True)
    filler = root / "filler"
    filler.write_bytes(b"x" * (1 << 20))  # freed at the end: "the user makes room"
    path = root / "s"
    out = {"acked": [], "failed": [], "errors": []}

    def opened():
        return Memory.open(path, embedder=HashEmbedder(), forgetting=False, sync="always")

    with opened() as mem:
        for i in range(100_000):
            key = f"k{i}"
            try:
                m = mem.remember(f"memory {i} " + "lorem ipsum dolor " * 20, key=key)
                out["acked"].append([key, m.id])
            except LocalmemError as e:
                out["failed"].append(key)
                out["errors"].append(f"{type(e).__name__}: {e}")
                if len(out["failed"]) >= 5:
                    break
            except Exception as e:
                out["errors"].append(f"UNEXPECTED {type(e).__name__}: {e}")
                break
    # Read-only use on the full disk.
    try:
        with opened() as mem:
            out["ro_len"] = len(mem)
            out["ro_list"] = len(mem.list(limit=10))
            out["ro_recall"] = len(mem.recall("memory 3 lorem", k=3, floor=False))
    except Exception as e:
        out["ro_error"] = f"{type(e).__name__}: {e}"
    # The CLI on the full disk: a message, not a traceback.
    cli = subprocess.run([str(Path(sys.executable).parent / "localmem"), "remember", "x",
                          "--store", str(root / "other")], capture_output=True, text=True)
    out["cli"] = [cli.returncode, cli.stderr[-2000:]]
    filler.unlink()
    with opened() as mem:
        for key in out["failed"]:  # the caller retries what raised, with the same key
            mem.remember(f"memory {key[1:]} " + "lorem ipsum dolor " * 20, key=key)
        for key, id in out["acked"]:  # and, unsure, retries what succeeded too
            assert mem.remember(f"memory {key[1:]} " + "lorem ipsum dolor " * 20, key=key).id == id
        out["keys"] = len({m.key for m in mem.list(limit=100_000)})
        out["final_len"] = len(mem)
    # The log preallocates its next megabyte; the arena does not: on a full disk a record can
    # reach the log and not the arena. The store then still opens and serves what is whole.
    import shutil
    from localmem import Store
    shutil.rmtree(path)
    sp, filler = root / "st", root / "filler2"
    with Store.open(sp, sync="always") as st:
        st.put(1, "first")
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass
        try:
            st.put(2, "y" * 5000)
            out["store_put"] = "ok"
        except LocalmemError as e:
            out["store_put"] = f"{type(e).__name__}: {e}"
    try:
        with Store.open(sp) as st:
            out["store_ro"] = [st.get(1).text, len(st)]
    except Exception as e:
        out["store_ro"] = f"{type(e).__name__}: {e}"
    filler.unlink()
    with Store.open(sp) as st:
        out["store_after"] = sorted(st.ids())
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to mount a small tmpfs")
    root = tmp_path_factory.mktemp("full")
    out = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", SCRIPT, str(root)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_full_disk_is_a_storage_full_error_that_names_path_and_space(run):
    assert run["acked"] and run["failed"], run
    for e in run["errors"]:
        assert e.startswith("StorageFullError: "), e
        assert "bytes free" in e or "No space left" in e, e
        assert "rollback" not in e


def test_a_store_on_a_full_disk_opens_for_reading(run):
    assert "ro_error" not in run, run.get("ro_error")
    assert run["ro_len"] == len(run["acked"]) and run["ro_list"] == 10 and run["ro_recall"] == 3


def test_the_cli_on_a_full_disk_prints_a_message(run):
    code, err = run["cli"]
    assert code == 1 and "Traceback" not in err, err
    assert "No space left on device" in err or "is full" in err, err


def test_retries_with_the_same_key_do_not_duplicate(run):
    n = len(run["acked"]) + len(run["failed"])
    assert run["keys"] == n and run["final_len"] == n


def test_a_record_the_log_took_and_the_arena_did_not_leaves_a_readable_store(run):
    assert run["store_put"].startswith("StorageFullError: "), run["store_put"]
    assert "may appear later" in run["store_put"]  # the error says the write may have happened
    assert run["store_ro"] == ["first", 1], run["store_ro"]
    assert run["store_after"] == [1, 2]  # applied once there is room: what the error said

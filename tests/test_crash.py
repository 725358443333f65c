"""Crash injection: kill -9 writers at random instants, cut the power, interrupt compaction,
and run two writer processes on one store. After every trial the store is reopened (which
runs recovery) and checked: every acknowledged write is there and intact, nothing that was
not acknowledged is half there.

Children are forked from the test process (the modules are already imported, so a trial
costs milliseconds); they report each acknowledged operation through a pipe before the
parent's SIGKILL lands.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from localmem import Store
from localmem.errors import StorageError
from localmem.store.manifest import read_manifest
from tests import tally

DIM = 8
ACK = struct.Struct("<q")
INTENT = 1 << 62


def text_for(id: int) -> str:
    return f"memory {id}: " + "x" * (id % 997)


def vector_for(id: int) -> np.ndarray:
    return np.random.default_rng(id).standard_normal(DIM).astype(np.float32)


def fork_child(body: Callable[[int], None]) -> tuple[int, int]:
    """Runs body(ack_fd) in a forked child; returns (pid, read end of the ack pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(r)
            body(w)
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def read_acks(fd: int) -> list[int]:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    data = b"".join(chunks)
    n = len(data) // ACK.size
    return [ACK.unpack_from(data, i * ACK.size)[0] for i in range(n)]


def writer_body(path: Path, sync: str, threads: int, base: int, compact: bool):
    """Each thread puts fresh ids and, now and then, deletes one it put earlier. A put is
    acked as id after the call returned; a delete is announced as id | INTENT before the
    call (it may take effect without its ack) and acked as -(id + 1) after."""

    def body(ack: int) -> None:
        s = Store.open(path, dim=DIM, sync=sync, checkpoint_bytes=256 << 10)  # type: ignore[arg-type]

        def work(t: int) -> None:
            for i in range(10**9):
                id = base + t * 100_000 + i
                s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))
                os.write(ack, ACK.pack(id))
                if i % 7 == 6:
                    victim = id - 3
                    os.write(ack, ACK.pack(victim | INTENT))
                    s.delete(victim)
                    os.write(ack, ACK.pack(-(victim + 1)))

        ts = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
        for t in ts:
            t.start()
        while compact:
            time.sleep(0.002)
            s.checkpoint(compact=True)
        for t in ts:
            t.join()

    return body


def verify(path: Path, acks: list[int], all_ids: set[int]) -> Store:
    """Reopens the store and checks the acknowledged operations against it."""
    s = Store.open(path, dim=DIM)  # as the app does: a store killed before it existed is made now
    put = {a for a in acks if 0 <= a < INTENT}
    deleted = {-a - 1 for a in acks if a < 0}
    may_be_deleted = {a & ~INTENT for a in acks if a >= INTENT}
    present = set(s.ids())
    missing = (put - may_be_deleted) - present
    resurrected = deleted & present
    assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
    assert not resurrected, f"acknowledged deletes undone: {sorted(resurrected)[:10]}"
    for id in present - all_ids:  # unacknowledged but present: must be whole
        it = s.get(id)
        assert it.text == text_for(id) and it.meta == {"id": id}, id
        np.testing.assert_array_equal(it.vector, vector_for(id))
    for id in list(put - may_be_deleted)[:50]:
        it = s.get(id)
        assert it.text == text_for(id), id
        np.testing.assert_array_equal(it.vector, vector_for(id))
    all_ids |= present
    return s


def run_kill_trials(tmp_path: Path, sync: str, threads: int, trials: int, compact: bool) -> None:
    path = tmp_path / "store"
    rng = random.Random(f"{sync}-{threads}-{compact}")
    all_ids: set[int] = set()
    acked_total = 0
    for trial in range(trials):
        base = (trial + 1) * 10_000_000
        pid, fd = fork_child(writer_body(path, sync, threads, base, compact))
        time.sleep(rng.uniform(0.003, 0.05))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"writer exited early with status {status}"
        acks = read_acks(fd)
        acked_total += len(acks)
        verify(path, acks, all_ids).close()
        tally.add("kill -9 trials", 1)
    tally.add("acknowledged operations checked after kill -9", acked_total)
    assert acked_total > trials  # the kills landed while writes were happening


@pytest.mark.parametrize(
    "sync,threads,trials,compact",
    [("always", 1, 60, False), ("batch", 4, 100, False), ("batch", 2, 50, True)],
)
def test_kill9_never_loses_an_acknowledged_write(tmp_path, sync, threads, trials, compact):
    run_kill_trials(tmp_path, sync, threads, trials, compact)


@pytest.mark.parametrize(
    "step",
    [
        "checkpoint:after-arena",
        "checkpoint:after-index",
        "checkpoint:after-manifest",
        "checkpoint:after-truncate",
    ],
)
def test_compaction_interrupted_at_each_step(tmp_path, step, monkeypatch):
    path = tmp_path / "store"
    with Store.open(path, dim=DIM) as s:
        for id in range(300):
            s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))
        for id in range(0, 300, 3):
            s.delete(id)
    gen_before = read_manifest(path / "MANIFEST").generation

    def body(ack: int) -> None:
        os.environ["LOCALMEM_CRASH_AT"] = step
        with Store.open(path) as s:
            s.checkpoint(compact=True)

    pid, fd = fork_child(body)
    _, status = os.waitpid(pid, 0)
    read_acks(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    gen_after = read_manifest(path / "MANIFEST").generation
    assert gen_after == (
        gen_before
        if step == "checkpoint:after-arena" or step == "checkpoint:after-index"
        else gen_before + 1
    )
    with Store.open(path) as s:
        live = [id for id in range(300) if id % 3]
        assert s.ids() == live
        for id in live[::10]:
            assert s.get(id).text == text_for(id)
        assert s.search(vector_for(100), 1)[0][0] == 100
        assert sorted(os.listdir(path / "arena")) == [f"gen-{gen_after:06d}.blob"]
    tally.add("compactions interrupted", 1)


def test_power_cut_drops_unsynced_bytes(tmp_path):
    """Writes acknowledged under `batch`, then more under `off` (never synced). The power
    cut keeps the synced prefix of the log plus garbage or a partial record, and a random
    prefix of the arena's unsynced tail; every acknowledged write must survive."""
    rng = random.Random(7)
    for trial in range(60):
        src = tmp_path / f"src{trial}"
        acked: list[int] = []
        with Store.open(src, dim=DIM, sync="batch") as s:
            for id in range(rng.randrange(1, 60)):
                s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))
                acked.append(id)
                if rng.random() < 0.05:
                    s.checkpoint(compact=rng.random() < 0.5)
            synced = s.synced_sizes()
        with Store.open(src, sync="off") as s:
            for id in range(1000, 1000 + rng.randrange(1, 40)):
                s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))
        cut = tmp_path / f"cut{trial}"
        shutil.copytree(src, cut)
        ((seg, size),) = synced.items()
        seg_cut = cut / "wal" / Path(seg).name
        data = seg_cut.read_bytes()
        tail = data[size:]
        kind = rng.choice(["clean", "garbage", "partial", "zeros", "in place"])
        k = rng.randrange(0, max(1, len(tail)))
        extra = {
            "clean": b"",
            "garbage": os.urandom(rng.randrange(1, 300)),
            "partial": tail[:k],
            "zeros": bytes(rng.randrange(1, 4096)),
            # The preallocated file keeps its length: some unsynced bytes reached the disk,
            # the rest of the space still reads as zeros.
            "in place": tail[:k] + bytes(len(tail) - k),
        }[kind]
        seg_cut.write_bytes(data[:size] + extra)
        for later in (cut / "wal").glob("*.wal"):  # created after the last sync: lost
            if later.name > seg_cut.name:
                later.unlink()
        m = read_manifest(cut / "MANIFEST")
        arena = cut / m.arena_file()
        adata = arena.read_bytes()
        keep = rng.randrange(m.arena_end, len(adata) + 1)
        arena.write_bytes(
            adata[:keep] + (os.urandom(rng.randrange(0, 100)) if rng.random() < 0.5 else b"")
        )
        all_ids: set[int] = set(acked)
        s = verify(cut, acked, all_ids)
        s.put(5000, text_for(5000))  # and it takes writes again
        s.close()
        with Store.open(cut) as again:
            assert 5000 in again and set(acked) <= set(again.ids())
        tally.add("power cuts simulated", 1)


def _two_writers(path: Path, seconds: float, kill_one_after: float | None):
    stop_at = time.monotonic() + seconds

    def body_for(proc: int) -> Callable[[int], None]:
        def body(ack: int) -> None:
            # Small segments and frequent checkpoints: each process rotates, checkpoints
            # and deletes segments the other may not have read yet.
            s = Store.open(path, sync="batch", segment_bytes=64 << 10, checkpoint_bytes=256 << 10)

            def work(t: int) -> None:
                i = 0
                while time.monotonic() < stop_at:
                    id = proc * 10**9 + t * 10**7 + i
                    s.put(id, text_for(id), meta={"id": id})
                    os.write(ack, ACK.pack(id))
                    if i % 50 == 0:
                        assert s.get(id).text == text_for(id)
                        len(s)  # reads the other process's writes
                    i += 1

            ts = [threading.Thread(target=work, args=(t,)) for t in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            s.close()

        return body

    Store.open(path, dim=None).close()
    children = [fork_child(body_for(p)) for p in (1, 2)]
    if kill_one_after is not None:
        time.sleep(kill_one_after)
        os.kill(children[0][0], signal.SIGKILL)
    acks: list[int] = []
    statuses = []
    for pid, fd in children:
        acks += read_acks(fd)
        statuses.append(os.waitpid(pid, 0)[1])
    return acks, statuses


def test_two_processes_write_one_store(tmp_path):
    acks, statuses = _two_writers(tmp_path / "s", seconds=3.0, kill_one_after=None)
    assert all(os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0 for st in statuses), statuses
    assert {a // 10**9 for a in acks} == {1, 2}
    with Store.open(tmp_path / "s") as s:
        assert set(acks) <= set(s.ids())
        assert len(s) == len(acks)  # each process acked everything it wrote before exiting
    tally.add("two-process writes checked", len(acks))


def test_killing_one_writer_harms_neither(tmp_path):
    acks, statuses = _two_writers(tmp_path / "s", seconds=2.5, kill_one_after=1.0)
    assert os.WIFSIGNALED(statuses[0])
    assert os.WIFEXITED(statuses[1]) and os.WEXITSTATUS(statuses[1]) == 0, "survivor failed"
    with Store.open(tmp_path / "s") as s:
        assert set(acks) <= set(s.ids())
        for id in set(s.ids()) - set(acks):
            assert s.get(id).text == text_for(id)


def test_reads_during_compaction(tmp_path):
    path = tmp_path / "s"
    with Store.open(path, dim=DIM) as s:
        for id in range(500):
            s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))

    def compactor(ack: int) -> None:
        with Store.open(path) as s:
            for round in range(15):
                for id in range(500, 520):
                    s.put(id + round * 100, "churn")
                    s.delete(id + round * 100)
                s.checkpoint(compact=True)

    pid, fd = fork_child(compactor)
    reads = 0
    with Store.open(path) as s:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            for id in range(0, 500, 37):
                it = s.get(id)
                assert it.text == text_for(id)
                np.testing.assert_array_equal(it.vector, vector_for(id))
                reads += 1
            assert s.search(vector_for(74), 1)[0][0] == 74
            if done:
                break
    read_acks(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert reads > 0


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("fork-based crash tests run on Linux")


def test_disk_full_is_a_clear_error_and_loses_nothing(tmp_path):
    """A writer whose files may not grow past a limit (RLIMIT_FSIZE stands in for a full
    disk) gets StorageError naming the cause; what it had acknowledged stays, and the store
    takes writes again once there is room."""
    import resource

    path = tmp_path / "s"
    Store.open(path, dim=DIM).close()
    size_now = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    def body(ack: int) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of a signal
        limit = size_now + 64 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        s = Store.open(path, sync="batch")
        for id in range(100_000):
            try:
                s.put(id, text_for(id), meta={"id": id}, vector=vector_for(id))
            except StorageError as e:
                os.write(ack, ACK.pack(-1))
                msg = str(e).encode()[:2000]
                os.write(ack, ACK.pack(len(msg)) + msg)
                return
            os.write(ack, ACK.pack(id))

    pid, fd = fork_child(body)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    raw = b""
    while chunk := os.read(fd, 1 << 16):
        raw += chunk
    os.close(fd)
    acks = []
    at = 0
    while True:
        (v,) = ACK.unpack_from(raw, at)
        at += ACK.size
        if v == -1:
            (n,) = ACK.unpack_from(raw, at)
            message = raw[at + ACK.size : at + ACK.size + n].decode()
            break
        acks.append(v)
    assert len(acks) > 10
    assert "File too large" in message or "No space" in message, message
    with Store.open(path) as s:
        assert set(acks) <= set(s.ids())
        for id in acks[-5:]:
            assert s.get(id).text == text_for(id)
        s.put(10**6, "room again")
        assert s.get(10**6).text == "room again"


def test_kill9_during_remember_many_keeps_memory_and_catalog_consistent(tmp_path):
    """The Memory layer over the store: a child ingests batches and acks each memory id once
    remember_many returned; after SIGKILL at a random instant, every acked memory is there
    (get, list, keyword and vector recall), and the catalog holds exactly the store's items."""
    from localmem import Memory
    from localmem.testing import HashEmbedder

    rng = random.Random(7)
    path = tmp_path / "mem"
    acked: list[int] = []
    for trial in range(12):

        def body(ack: int, trial: int = trial) -> None:
            with Memory.open(path, embedder=HashEmbedder(), sync="batch") as mem:
                for b in range(1000):
                    items = [{"text": f"memory t{trial}b{b}i{i}"} for i in range(20)]
                    for m in mem.remember_many(items, batch=8):
                        os.write(ack, ACK.pack(m.id))

        pid, fd = fork_child(body)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acked += read_acks(fd)
        with Memory.open(path, embedder=HashEmbedder(), sync="batch") as mem:
            assert mem.catalog.count() == len(mem.store)
            for id in rng.sample(acked, min(20, len(acked))):
                m = mem.get(id)
                assert mem.recall(m.text, k=1, floor=False)[0].memory.id == id
        tally.add("kill -9 trials", 1)
    assert len(acked) > 100

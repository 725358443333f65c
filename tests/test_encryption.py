"""Encryption at rest (issue 25): nothing readable on disk, tampering detected, the key's
life (passphrase, OS keyring, rotate), and `localmem encrypt` converting a store in place,
crash-safely. The real SQLite (sqlite3mc), the real keyring library (with keyrings.alt's
file backend under tmp_path, see conftest) and, for the grep test, the real ONNX model."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from localmem import Memory, quantize
from localmem.errors import CorruptFileError, EncryptionKeyError, StoreLockedError
from localmem.store import keyfile
from localmem.testing import HashEmbedder

FAST = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}  # Argon2id for tests only
ROOT = Path(__file__).resolve().parents[1]


def _fast_encrypted(path: Path, passphrase: str = "pw") -> None:
    """An empty encrypted store whose passphrase stretches in a millisecond."""
    path.mkdir(mode=0o700, parents=True)
    keyfile.create(path, uuid.uuid4().hex[:16], passphrase=passphrase, params=FAST)


def _files(root: Path, since: float | None = None) -> list[Path]:
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            f = Path(dirpath) / n
            try:
                st = f.lstat()
            except OSError:
                continue
            if not f.is_file() or f.is_symlink() or st.st_size > 512 << 20:
                continue
            if since is None or st.st_mtime >= since:
                out.append(f)
    return out


def _scan(files: list[Path], run: str, needles: list[bytes]) -> tuple[set[str], int]:
    """Markers of this run found (by number) and how many of the needles (vector bytes)
    appear in some file."""
    marker = re.compile(re.escape(run.encode()) + rb"-(\d{4})")
    found: set[str] = set()
    hit: set[int] = set()
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        found.update(m.group(1).decode() for m in marker.finditer(data))
        hit.update(i for i, n in enumerate(needles) if n in data)
    return found, len(hit)


_WORDS = [
    "apple",
    "river",
    "doctor",
    "piano",
    "garden",
    "winter",
    "invoice",
    "sister",
    "museum",
    "bicycle",
    "dentist",
    "holiday",
    "tennis",
    "salary",
    "kitchen",
    "violin",
    "passport",
    "coffee",
    "mountain",
    "printer",
    "lawyer",
    "harbour",
    "birthday",
    "allergy",
    "novel",
    "chess",
    "roof",
    "insurance",
    "wedding",
    "pottery",
    "marathon",
    "telescope",
    "mortgage",
    "spinach",
    "glacier",
    "festival",
    "camera",
    "ferry",
    "thesis",
]


def _write_thousand(path: Path, run: str, key: str | None) -> tuple[list[bytes], list[bytes]]:
    """1,000 memories with unique markers; the first 500 aged into the warm tier (their
    vectors kept as INT8 codes), the rest hot (float32). Returns the raw bytes of 5 float32
    vectors and 5 INT8 codes of them."""
    mem = Memory.open(path, key=key)
    try:
        rng = random.Random(1)
        texts = [f"{run}-{i:04d} " + " ".join(rng.sample(_WORDS, 6)) for i in range(1000)]
        mem.remember_many([{"text": t} for t in texts[:500]])
        mem.consolidate(now=time.time() + 10 * 86400)  # retention falls: hot -> warm
        assert mem.stats()["by_tier"].get("warm", 0) >= 100, mem.stats()["by_tier"]
        mem.remember_many([{"text": t} for t in texts[500:]])
        vecs = mem.records.embedder.embed([*texts[:5], *texts[500:505]])
    finally:
        mem.close()
    int8 = [quantize(v)[0].tobytes() for v in vecs[:5]]
    fp32 = [np.asarray(v, dtype=np.float32).tobytes() for v in vecs[5:]]
    return fp32, int8


def test_no_marker_and_no_vector_on_disk_when_encrypted(tmp_path: Path) -> None:
    """The must-show: 1,000 markers and 10 vectors grepped for in every file of the store and
    of the temp dir; the plain store in the same test is the control."""
    started = time.time() - 1
    plain_run, enc_run = f"plain{uuid.uuid4().hex[:8]}", f"enc{uuid.uuid4().hex[:8]}"

    fp32, int8 = _write_thousand(tmp_path / "plain", plain_run, None)
    found, vec_hits = _scan(_files(tmp_path / "plain"), plain_run, fp32 + int8)
    assert len(found) == 1000  # the control: grep does find plaintext
    assert vec_hits == 10

    _fast_encrypted(tmp_path / "enc")
    fp32, int8 = _write_thousand(tmp_path / "enc", enc_run, "pw")
    store_files = _files(tmp_path / "enc")
    assert {f.name for f in store_files} >= {"KEY", "MANIFEST", "catalog.sqlite"}
    assert any(f.suffix == ".wal" for f in store_files)
    assert any(f.suffix == ".blob" for f in store_files)
    temp_files = _files(Path(tempfile.gettempdir()), since=started)
    found, vec_hits = _scan(store_files + temp_files, enc_run, fp32 + int8)
    print(f"\nencrypted: {len(found)} of 1,000 markers and {vec_hits} of 10 vectors found in "
          f"{len(store_files)} store files and {len(temp_files)} new temp files (plain, "
          "the control: 1,000 and 10)")  # fmt: skip
    assert found == set() and vec_hits == 0, (sorted(found)[:5], vec_hits)

    with Memory.open(tmp_path / "enc", key="pw") as mem:  # and it all reads back
        assert mem.stats()["memories"] == 1000
        hit = mem.recall(f"{enc_run}-0777 note number 777", k=1)[0]
        assert hit.memory.text.startswith(f"{enc_run}-0777 ")


# ---------------------------------------------------------------------- keys


def _small_store(path: Path, n: int = 30, key: str | None = "pw") -> dict[int, str]:
    if key is not None:
        _fast_encrypted(path, key)
    with Memory.open(path, embedder=HashEmbedder(), key=key) as mem:
        items = mem.remember_many([{"text": f"memory {i} about item {i % 7}"} for i in range(n)])
        return {m.id: m.text for m in items}


def test_no_key_wrong_key_and_plain_given_a_key_are_clear_errors(tmp_path: Path) -> None:
    _small_store(tmp_path / "s")
    before = {f: f.read_bytes() for f in _files(tmp_path / "s") if f.name not in ("LOCK", "USERS")}
    with pytest.raises(EncryptionKeyError, match="localmem key unlock --store"):
        Memory.open(tmp_path / "s", embedder=HashEmbedder())
    with pytest.raises(EncryptionKeyError, match="wrong one"):
        Memory.open(tmp_path / "s", embedder=HashEmbedder(), key="not it")
    after = {f: f.read_bytes() for f in before}
    assert after == before  # nothing was touched, nothing repaired
    _small_store(tmp_path / "p", key=None)
    with pytest.raises(EncryptionKeyError, match="not encrypted"):
        Memory.open(tmp_path / "p", embedder=HashEmbedder(), key="pw")


def test_passphrase_from_the_environment_and_the_keyring(tmp_path, monkeypatch) -> None:
    s = tmp_path / "s"
    texts = _small_store(s)
    monkeypatch.setenv("LOCALMEM_PASSPHRASE", "pw")
    with Memory.open(s, embedder=HashEmbedder()) as mem:
        assert mem.stats()["memories"] == len(texts)
    monkeypatch.delenv("LOCALMEM_PASSPHRASE")
    import localmem

    localmem.keys.unlock(s, "pw")
    info = localmem.keys.encryption(s)
    assert info is not None and info["held_by"] == ["argon2id", "keyring"]
    assert info["keyring_has_key"]
    with Memory.open(s, embedder=HashEmbedder()) as mem:  # no passphrase: the keyring's key
        assert {m.id: m.text for m in mem.list(limit=100)} == texts
    localmem.keys.lock(s)
    assert not localmem.keys.encryption(s)["keyring_has_key"]
    with pytest.raises(EncryptionKeyError):
        Memory.open(s, embedder=HashEmbedder())


def test_rotate_rewraps_without_touching_the_data(tmp_path: Path) -> None:
    import localmem

    s = tmp_path / "s"
    texts = _small_store(s)
    data = {f: f.read_bytes() for f in _files(s) if f.name not in ("KEY", "LOCK", "USERS")}
    localmem.keys.rotate_key(s, passphrase="pw", new_passphrase="new one")
    assert {f: f.read_bytes() for f in data} == data  # the data key is the same
    with pytest.raises(EncryptionKeyError):
        Memory.open(s, embedder=HashEmbedder(), key="pw")
    with Memory.open(s, embedder=HashEmbedder(), key="new one") as mem:
        assert {m.id: m.text for m in mem.list(limit=100)} == texts


def test_a_file_from_another_store_is_refused_as_another_key(tmp_path: Path) -> None:
    _small_store(tmp_path / "a")
    _small_store(tmp_path / "b")
    arena = sorted((tmp_path / "a" / "arena").glob("*.blob"))[0]
    shutil.copy(arena, tmp_path / "b" / "arena" / arena.name)
    with pytest.raises(EncryptionKeyError, match="another key"):
        Memory.open(tmp_path / "b", embedder=HashEmbedder(), key="pw")


# ---------------------------------------------------------------------- tampering


def _truth_check(path: Path, truth: dict[int, str]) -> tuple[str, int]:
    """Opens a damaged store: ("ok", memories missing) or ("refused", 0). Raises on a
    wrong text or an error that is not a named corruption or key error."""
    try:
        mem = Memory.open(path, embedder=HashEmbedder(), key="pw", forgetting=False)
    except (CorruptFileError, EncryptionKeyError) as e:
        assert str(e), "an error must say what is wrong"
        return "refused", 0
    try:
        got = {m.id: m.text for m in mem.list(limit=10_000)}
        wrong = {i: t for i, t in got.items() if truth.get(i) != t}
        assert not wrong, f"wrong texts served: {wrong}"
        for i in truth:
            try:
                assert mem.get(i).text == truth[i]
            except Exception as e:  # missing is allowed (the log ended early), wrong is not
                if type(e).__name__ not in ("UnknownIdError",):
                    raise
        return "ok", len(truth) - len(got)
    finally:
        mem.close()


def test_flipped_bytes_and_cuts_in_encrypted_files_never_give_wrong_texts(tmp_path) -> None:
    """The must-show: >= 2,000 single-byte flips and truncations across every encrypted
    file: each open succeeds with the memories it serves intact or fails with a named
    corruption (or key) error; none crashes, none returns a wrong text."""
    pristine = tmp_path / "pristine"
    truth = _small_store(pristine, n=24)
    with Memory.open(pristine, embedder=HashEmbedder(), key="pw") as mem:
        mem.records.store.checkpoint()  # an index snapshot, then records after it
        for i in range(12):
            m = mem.remember(f"later memory {i}")
            truth[m.id] = m.text
    files = [f for f in _files(pristine) if f.stat().st_size > 0]
    names = {f.relative_to(pristine).as_posix() for f in files}
    assert {"KEY", "MANIFEST", "catalog.sqlite"} <= names
    assert any(n.startswith("index/") for n in names) and any(n.endswith(".wal") for n in names)
    rng = random.Random(25)
    outcomes: dict[str, int] = {"ok": 0, "refused": 0}
    by_file: dict[str, dict[str, int]] = {}
    missing = 0
    trials = int(os.environ.get("LOCALMEM_FLIP_TRIALS", "2000"))
    work = tmp_path / "work"
    for t in range(trials):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        name = rng.choice(sorted(names))
        f = work / name
        data = bytearray(f.read_bytes())
        if t % 5 == 4:  # a cut
            f.write_bytes(bytes(data[: rng.randrange(len(data))]))
        else:
            at = rng.randrange(len(data))
            data[at] ^= rng.randrange(1, 256)
            f.write_bytes(bytes(data))
        kind, lost = _truth_check(work, truth)
        outcomes[kind] += 1
        counts = by_file.setdefault(name.split("/")[0], {"ok": 0, "refused": 0})
        counts[kind] += 1
        missing += lost
    print(f"\n{trials} flips/cuts over {len(names)} files: {outcomes}, "
          f"memories missing after a successful open: {missing}; by file: {by_file}")  # fmt: skip
    assert sum(outcomes.values()) == trials >= 2000 or "LOCALMEM_FLIP_TRIALS" in os.environ


# ---------------------------------------------------------------------- localmem encrypt


def _encrypt_cmd(store: Path) -> list[str]:
    return [sys.executable, "-m", "localmem", "encrypt", "--store", str(store), "--keyring",
            "--no-passphrase"]  # fmt: skip


def _check_whole(store: Path, truth: dict[int, str]) -> str:
    """Opens the store as a user would after the kill (an encrypted one with the keyring's
    key): every memory there, nothing left beside it. Returns its form."""
    form = "encrypted" if (store / "KEY").exists() else "plain"
    with Memory.open(store, embedder=HashEmbedder()) as mem:
        got = {m.id: m.text for m in mem.list(limit=10_000)}
    assert got == truth, f"{form} store after the kill: {len(got)} of {len(truth)}"
    leftovers = [p.name for p in store.parent.iterdir() if p.name.startswith(f".{store.name}.")]
    assert not leftovers, leftovers
    return form


def test_encrypt_converts_in_place_and_reads_back(tmp_path: Path) -> None:
    s = tmp_path / "s"
    truth = _small_store(s, n=200, key=None)
    env = {**os.environ, "LOCALMEM_PASSPHRASE": "a long passphrase"}
    out = subprocess.run([sys.executable, "-m", "localmem", "encrypt", "--store", str(s)],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "encrypted" in out.stdout
    with Memory.open(s, embedder=HashEmbedder(), key="a long passphrase") as mem:
        assert {m.id: m.text for m in mem.list(limit=1000)} == truth
        assert mem.stats()["encryption"]["held_by"] == ["argon2id", "keyring"]
    assert not any(b"memory 1" in f.read_bytes() for f in _files(s))
    again = subprocess.run([sys.executable, "-m", "localmem", "encrypt", "--store", str(s)],
                           env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 1 and "already encrypted" in again.stderr


def test_encrypt_refuses_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    import localmem

    s = tmp_path / "s"
    _small_store(s, key=None)
    with (
        Memory.open(s, embedder=HashEmbedder()),
        pytest.raises(StoreLockedError, match="open in another process"),
    ):
        localmem.keys.encrypt(s, keyring=True)
    assert not (s / "KEY").exists()


def test_kill_9_during_encrypt_leaves_the_old_or_the_new_store_whole(tmp_path: Path) -> None:
    """The must-show: `localmem encrypt` killed at >= 50 points (each named step, then at
    random times over a whole run): the store opens afterwards, plain or encrypted, with
    every memory, and nothing of the other form is left beside it."""
    pristine = tmp_path / "pristine"
    truth = _small_store(pristine, n=300, key=None)
    work = tmp_path / "work"
    steps = ["encrypt:after-checkpoint", "encrypt:after-key", "encrypt:after-wal",
             "encrypt:after-arena", "encrypt:after-catalog", "encrypt:before-switch",
             "encrypt:after-switch"]  # fmt: skip
    forms: dict[str, int] = {"plain": 0, "encrypted": 0}
    for step in steps:
        shutil.copytree(pristine, work)
        env = {**os.environ, "LOCALMEM_CRASH_AT": step}
        out = subprocess.run(_encrypt_cmd(work), env=env, capture_output=True, timeout=120)
        assert out.returncode == -signal.SIGKILL, (step, out.stderr)
        forms[_check_whole(work, truth)] += 1
        shutil.rmtree(work)
    # A whole run's length, then kills spread over it.
    shutil.copytree(pristine, work)
    t0 = time.perf_counter()
    subprocess.run(_encrypt_cmd(work), check=True, capture_output=True, timeout=120)
    whole = time.perf_counter() - t0
    shutil.rmtree(work)
    rng = random.Random(9)
    kills = 0
    for _ in range(50):
        shutil.copytree(pristine, work)
        proc = subprocess.Popen(_encrypt_cmd(work), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.0, whole * 1.1))
        proc.send_signal(signal.SIGKILL)
        kills += proc.wait() == -signal.SIGKILL
        forms[_check_whole(work, truth)] += 1
        shutil.rmtree(work)
    print(f"\nkill -9 during encrypt: {len(steps)} named steps + 50 random times "
          f"(run {whole:.2f} s, {kills} died mid-run): {forms}")  # fmt: skip
    assert forms["plain"] > 0 and forms["encrypted"] > 0 and kills >= 25


# ---------------------------------------------------------------------- the faces


def test_mcp_and_ask_open_with_the_keyring_or_name_the_unlock_command(tmp_path: Path) -> None:
    """The MCP server (a real client over stdio) and `localmem ask` cannot ask for a
    passphrase: they open with the keyring's key, or exit saying how to unlock."""
    import asyncio

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    import localmem

    s = tmp_path / "s"
    _fast_encrypted(s)
    with Memory.open(s, key="pw") as mem:  # the real embedder, as the server uses
        mem.remember("Priya is allergic to peanuts")
    unlock = f"localmem key unlock --store {s}"
    for args in (["mcp", "--store", str(s)], ["ask", "who is allergic?", "--store", str(s)]):
        out = subprocess.run([sys.executable, "-m", "localmem", *args], capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        assert out.returncode == 1 and unlock in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr

    localmem.keys.unlock(s, "pw")
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "localmem", "mcp", "--store", str(s)],
        env=dict(os.environ),  # the keyring backend's settings (conftest)
    )  # fmt: skip

    async def go() -> None:
        async with Client(server) as c:
            r = await c.call_tool("recall", {"query": "who is allergic to peanuts?", "k": 1})
            assert not r.is_error and "Priya" in str(r.structured_content)
            st = await c.call_tool("memory_stats", {})
            assert st.structured_content["encryption"]["held_by"] == ["argon2id", "keyring"]

    asyncio.run(go())


def test_doctor_and_stats_say_whether_the_store_is_encrypted(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localmem.cli import main

    plain, enc = tmp_path / "p", tmp_path / "e"
    _small_store(plain, key=None)
    _small_store(enc)
    import localmem

    localmem.keys.unlock(enc, "pw")
    runner = CliRunner()
    status = runner.invoke(main, ["key", "status", "--store", str(enc)])
    assert status.exit_code == 0 and "key held by a passphrase and the OS keyring" in status.output
    assert "unlocked" in status.output
    status = runner.invoke(main, ["key", "status", "--store", str(plain)])
    assert "off (plain files" in status.output
    from localmem.doctor import store_summary

    assert "encrypted (xchacha20poly1305, key held by a passphrase and the OS keyring)" in (
        store_summary(enc)
    )
    assert "plain files (not encrypted)" in store_summary(plain)


def test_encrypt_where_no_store_is_yet_makes_one_encrypted_from_the_start(tmp_path) -> None:
    from click.testing import CliRunner

    from localmem.cli import main

    s = tmp_path / "new"
    out = CliRunner().invoke(main, ["encrypt", "--store", str(s), "--no-keyring"],
                             env={"LOCALMEM_PASSPHRASE": "pw"})  # fmt: skip
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in s.iterdir()) == ["KEY"]
    with Memory.open(s, embedder=HashEmbedder(), key="pw") as mem:
        mem.remember("first words, sealed")
    assert not any(b"first words" in f.read_bytes() for f in _files(s))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not a store")
    out = CliRunner().invoke(main, ["encrypt", "--store", str(busy), "--no-keyring"],
                             env={"LOCALMEM_PASSPHRASE": "pw"})  # fmt: skip
    assert out.exit_code == 1 and "not a localmem store" in out.output


def test_key_commands_unlock_lock_rotate_and_refuse_clearly(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localmem.cli import main

    s, plain = tmp_path / "s", tmp_path / "p"
    texts = _small_store(s)
    _small_store(plain, key=None)
    run = CliRunner().invoke

    def key(*args: str, **env: str):  # type: ignore[no-untyped-def]
        return run(main, ["key", *args, "--store", str(s)], env=env)

    out = key("unlock", LOCALMEM_PASSPHRASE="wrong")
    assert out.exit_code == 1 and "wrong one" in out.output and "Traceback" not in out.output
    assert key("unlock", LOCALMEM_PASSPHRASE="pw").exit_code == 0
    assert "unlocked" in key("status").output
    out = key("rotate", "--no-keyring", LOCALMEM_NEW_PASSPHRASE="second")
    assert out.exit_code == 0, out.output  # the keyring held the key: no current passphrase
    assert "locked (needs its passphrase)" in key("status").output
    with Memory.open(s, embedder=HashEmbedder(), key="second") as mem:
        assert {m.id: m.text for m in mem.list(limit=100)} == texts
    out = key("lock")  # nothing in the keyring, and only the passphrase left: fine
    assert out.exit_code == 0
    out = key("rotate", "--no-passphrase", "--no-keyring", LOCALMEM_PASSPHRASE="second")
    assert out.exit_code == 1 and "needs the OS keyring" in out.output
    out = run(main, ["key", "rotate", "--store", str(plain)])
    assert out.exit_code == 1 and "not encrypted" in out.output
    out = run(main, ["stats", "--store", str(s)])
    assert out.exit_code == 1 and "localmem key unlock --store" in out.output


def test_a_forged_tombstone_or_key_in_an_arena_header_is_caught(tmp_path: Path) -> None:
    """A blob's header fields (memory id, flags) are trusted by the open-time scan without
    decrypting: in an encrypted arena they carry a MAC, so flipping a PUT into a tombstone
    and fixing the CRC (no key needed) is damage, never a silent deletion."""
    import struct

    from localmem import _core
    from localmem.store.crypt import StoreKey
    from localmem.store.store import Store

    s = tmp_path / "s"
    _fast_encrypted(s)
    key = StoreKey(keyfile.unlock(s, "pw"))
    with Store.open(s, key=key) as st:
        for i in (1, 2, 3):
            st.put(i, f"item {i}")
        st.checkpoint()
    arena = sorted((s / "arena").glob("*.blob"))[0]
    data = bytearray(arena.read_bytes())
    for field in ("flags", "key"):
        bad = bytearray(data)
        off = 64  # the first blob, then the second
        off += 32 + ((struct.unpack_from("<I", bad, off + 4)[0] + 7) & ~7)
        if field == "flags":
            struct.pack_into("<I", bad, off + 24, 1)  # TOMBSTONE
        else:
            struct.pack_into("<q", bad, off + 16, 99)
        n = struct.unpack_from("<I", bad, off + 4)[0]
        crc = _core.crc32c(
            bytes(bad[off + 32 : off + 32 + n]), _core.crc32c(bytes(bad[off + 4 : off + 32]))
        )
        struct.pack_into("<I", bad, off, crc)
        arena.write_bytes(bytes(bad))
        try:
            with Store.open(s, key=key) as st:
                assert sorted(st.get(i).text for i in (1, 2, 3)) == ["item 1", "item 2", "item 3"]
            outcome = "served intact"
        except CorruptFileError as e:
            assert "failed authentication" in str(e) and arena.name in str(e), str(e)
            outcome = "refused"
        print(f"forged {field}: {outcome}")
        arena.write_bytes(bytes(data))


@pytest.mark.parametrize("new_complete", [False, True])
def test_a_switch_cut_between_two_renames_is_finished_by_any_next_step(
    tmp_path: Path, new_complete: bool
) -> None:
    """Where renameat2's exchange is missing, `localmem encrypt` switches with two renames; a
    crash between them leaves no store at the path. A retried `encrypt`, or an open with a
    passphrase, must finish (or undo) that switch first — never make a new store there and
    then delete both copies as leftovers."""
    import localmem
    from localmem.store import swap

    s = tmp_path / "s"
    truth = _small_store(s, key=None)
    if new_complete:  # the crash came after the encrypted copy was complete
        localmem.keys.encrypt(s, keyring=True)
        shutil.copytree(s, swap.staging_path(s))
        (swap.staging_path(s) / swap.COMPLETE).touch()
        shutil.rmtree(s)
        _small_store(tmp_path / "plain-copy", key=None)  # stands for the old plain store
        os.rename(tmp_path / "plain-copy", swap._old_path(s))
    else:
        os.rename(s, swap._old_path(s))
    assert not s.exists()
    if new_complete:
        with pytest.raises(EncryptionKeyError, match="already encrypted"):
            localmem.keys.encrypt(s, keyring=True)  # the retry finds the switch done
    else:
        with pytest.raises(EncryptionKeyError, match="not encrypted"):
            Memory.open(s, embedder=HashEmbedder(), key="pw")  # the open restores it first
    with Memory.open(s, embedder=HashEmbedder()) as mem:
        got = {m.id: m.text for m in mem.list(limit=1000)}
    assert got == truth
    assert (s / "KEY").exists() == new_complete  # the complete new store won, else the old
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.")]


def test_encrypt_through_a_symlink_encrypts_the_directory_and_leaves_no_plaintext(
    tmp_path: Path,
) -> None:
    import localmem

    real, link = tmp_path / "disk" / "store", tmp_path / "home" / "store"
    truth = _small_store(real, key=None)
    link.parent.mkdir()
    link.symlink_to(real)
    localmem.keys.encrypt(link, keyring=True)
    assert link.is_symlink() and (real / "KEY").exists()
    assert not any(b"memory 1" in f.read_bytes() for f in _files(tmp_path))
    with Memory.open(link, embedder=HashEmbedder()) as mem:
        assert {m.id: m.text for m in mem.list(limit=1000)} == truth

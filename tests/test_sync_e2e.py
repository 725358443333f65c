"""Issue 26 with the real parts: the real ONNX model (vectors travel with the records: the
importing device embeds nothing and recalls at once), the folder grepped for plaintext, an
encrypted store, a device restored from an old backup, a folder with garbage in it, and the
CLI (``localmem sync init / join / status``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from localmem import Memory
from localmem.cli import main
from localmem.errors import EncryptionKeyError, InvalidArgumentError
from localmem.store import syncfolder as sf
from localmem.sync import stamps
from localmem.testing import HashEmbedder
from tests.test_encryption import _WORDS, _fast_encrypted, _files, _scan


def test_the_folder_holds_no_plaintext_and_vectors_travel(tmp_path: Path) -> None:
    """The must-show grep: 1,000 memories with markers, and 10 of their vectors, looked for
    in every file of the folder; the store's own log is the control."""
    run = f"sync{uuid.uuid4().hex[:8]}"
    rng = random.Random(1)
    texts = [f"{run}-{i:04d} " + " ".join(rng.sample(_WORDS, 6)) for i in range(1000)]
    with Memory.open(tmp_path / "a") as a:
        a.remember_many([{"text": t} for t in texts])
        code = a.sync_init(tmp_path / "folder")
        vecs = [np.asarray(v, dtype=np.float32).tobytes() for v in a.embedder.embed(texts[:10])]
    found, hits = _scan(_files(tmp_path / "a"), run, vecs)
    assert len(found) == 1000 and hits == 10  # the control: grep finds the plain store's
    folder_files = _files(tmp_path / "folder")
    assert len(folder_files) >= 2
    found, hits = _scan(folder_files, run, vecs)
    print(f"\nsync folder: {len(found)} of 1,000 markers and {hits} of 10 vectors found in "
          f"{len(folder_files)} files (the plain store: 1,000 and 10)")  # fmt: skip
    assert found == set() and hits == 0
    names = {f.relative_to(tmp_path / "folder").as_posix() for f in folder_files}
    assert all(n == sf.MARKER or sf.SEGMENT.match(n.split("/")[-1]) for n in names), names

    with Memory.open(tmp_path / "b") as b:
        out = b.sync_join(tmp_path / "folder", code)
        assert out["imported"] == 1000 and out["embedded"] == 0  # no re-embedding
        hit = b.recall(f"{run}-0777 " + texts[777].split(" ", 1)[1], k=1)[0]
        assert hit.memory.text == texts[777] and hit.memory.tier == "hot"
        assert "semantic" in hit.why and hit.cosine is not None and hit.cosine > 0.9


def _mem(path: Path, **kw) -> Memory:
    return Memory.open(path, embedder=HashEmbedder(384), forgetting=False, **kw)


def test_an_encrypted_store_keeps_the_sync_key_sealed(tmp_path: Path) -> None:
    _fast_encrypted(tmp_path / "a")
    with _mem(tmp_path / "a", key="pw") as a:
        a.remember("the spare key is under the blue pot")
        code = a.sync_init(tmp_path / "folder")
    raw = (tmp_path / "a" / "SYNC").read_bytes()
    from localmem.sync.state import key_of_code

    assert key_of_code(code).hex().encode() not in raw and not raw.startswith(b"{")
    assert oct((tmp_path / "a" / "SYNC").stat().st_mode & 0o777) == "0o600"
    with _mem(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", code)
        assert [m.text for m in b.list()] == ["the spare key is under the blue pot"]
    with _mem(tmp_path / "a", key="pw") as a:
        assert a.sync()["imported"] == 0


def test_a_device_restored_from_an_old_backup_loses_nothing(tmp_path: Path) -> None:
    """Its later changes are in the folder: they come back as it opens, its segment numbers
    and clock go on after them, and a new memory does not reuse an id it gave before."""
    with _mem(tmp_path / "a") as a:
        code = a.sync_init(tmp_path / "folder")
    with _mem(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", code)
        early = b.remember("before the backup")
        b.sync()
    shutil.copytree(tmp_path / "b", tmp_path / "backup")
    with _mem(tmp_path / "b") as b:
        late = b.remember("after the backup")
        b.pin(early.id)
        b.sync()
        device = b.sync_status()["device"]
        stamp = max(stamps.stamps_of(b.store.get(early.id).meta).values())
        seqs = sf.segments(tmp_path / "folder", device)
    shutil.rmtree(tmp_path / "b")
    shutil.move(tmp_path / "backup", tmp_path / "b")
    with _mem(tmp_path / "b", clock=lambda: time.time() - 3600) as b:  # and its clock is late
        # the open took its later changes back from the folder before anything new
        assert {m.text for m in b.list()} == {"before the backup", "after the backup"}
        assert b.get(early.id).pinned
        new = b.remember("after the restore")
        assert new.id not in (early.id, late.id) and new.id > late.id
        b.update(early.id, tags=["x"])
        assert max(stamps.stamps_of(b.store.get(early.id).meta).values()) > stamp
        b.sync()
        assert max(sf.segments(tmp_path / "folder", device)) > max(seqs)
    with _mem(tmp_path / "a") as a:
        a.sync()
        assert {m.text for m in a.list()} == {"before the backup", "after the backup",
                                               "after the restore"}  # fmt: skip
        assert list(a.get(early.id).tags) == ["x"]


def test_garbage_in_the_folder_is_waited_on_or_ignored_never_applied(tmp_path: Path) -> None:
    with _mem(tmp_path / "a") as a:
        code = a.sync_init(tmp_path / "folder")
        a.remember("a real memory")
        a.sync()
        device = a.sync_status()["device"]
    folder = tmp_path / "folder"
    rng = random.Random(26)
    nxt = max(sf.segments(folder, device)) + 1
    sf.segment_path(folder, device, nxt).write_bytes(rng.randbytes(5000))  # a 'next' one
    (folder / device / "0000000000000001 (conflicted copy).seg").write_bytes(b"x" * 100)
    (folder / ("f" * 32)).mkdir()
    (folder / ("f" * 32) / "0000000000000001.seg").write_bytes(rng.randbytes(300))
    other = tmp_path / "other"
    with _mem(tmp_path / "x") as x:
        x.sync_init(other)
    shutil.copytree(next(p for p in other.iterdir() if p.is_dir()), folder / ("e" * 32))
    with _mem(tmp_path / "b") as b:
        out = b.sync_join(folder, code)
        assert [m.text for m in b.list()] == ["a real memory"]
        assert out["waiting"] == {device: "incomplete", "f" * 32: "incomplete",
                                  "e" * 32: "sealed with another sync key"}  # fmt: skip
        assert b.sync_status()["rejected"] == 0


def test_wrong_codes_and_folders_are_clear_errors(tmp_path: Path) -> None:
    with _mem(tmp_path / "a") as a:
        code = a.sync_init(tmp_path / "folder")
        with pytest.raises(InvalidArgumentError, match="syncs with"):
            a.sync_init(tmp_path / "folder2")
    with _mem(tmp_path / "x") as x:
        other = x.sync_init(tmp_path / "other")
    with _mem(tmp_path / "b") as b:
        with pytest.raises(InvalidArgumentError, match="mistyped"):
            typo = code[:10] + ("A" if code[10] != "A" else "B") + code[11:]
            b.sync_join(tmp_path / "folder", typo)
        with pytest.raises(EncryptionKeyError, match="another sync folder"):
            b.sync_join(tmp_path / "folder", other)
        with pytest.raises(Exception, match="not a sync folder"):
            b.sync_join(tmp_path / "nowhere", code)
        with pytest.raises(InvalidArgumentError, match="does not sync"):
            b.sync()
        assert b.sync_status() is None
        b.sync_join(tmp_path / "folder", code.lower().replace("-", " "))  # typed loosely
    os.rename(tmp_path / "folder", tmp_path / "moved")
    with _mem(tmp_path / "b") as b:
        with pytest.raises(Exception, match="not there"):
            b.sync()
        assert b.sync(tmp_path / "moved")["imported"] == 0
        assert b.sync_status()["folder"] == str(tmp_path / "moved")


def test_the_cli_sets_sync_up_and_reports(tmp_path: Path) -> None:
    runner = CliRunner()
    a, b, folder = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "folder")
    r = runner.invoke(main, ["remember", "--store", a, "Ana's birthday is May 3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["sync", "init", folder, "--store", a])
    assert r.exit_code == 0, r.output
    code = r.output.strip().splitlines()[-1].strip()
    assert code.startswith("LM1-")
    r = runner.invoke(main, ["sync", "join", folder, "--store", b])
    assert r.exit_code != 0 and "LOCALMEM_SYNC_CODE" in r.output
    r = runner.invoke(main, ["sync", "join", folder, "--store", b],
                      env={"LOCALMEM_SYNC_CODE": code})  # fmt: skip
    assert r.exit_code == 0 and "imported 1 " in r.output, r.output
    r = runner.invoke(main, ["sync", "--store", b])
    assert r.exit_code == 0 and "imported 0 and exported 0" in r.output, r.output
    r = runner.invoke(main, ["sync", "status", "--store", b, "--json", "--code"])
    out = json.loads(r.output)
    assert out["code"] == code and len(out["devices"]) == 1 and out["folder"] == folder
    r = runner.invoke(main, ["sync", "status", "--store", b])
    assert "last import" in r.output and out["device"][:8] in r.output
    r = runner.invoke(main, ["sync", "status", "--store", str(tmp_path / "c")])
    assert r.exit_code == 1 and "no store at" in r.output and not (tmp_path / "c").exists()
    runner.invoke(main, ["remember", "a note", "--store", str(tmp_path / "c")])
    r = runner.invoke(main, ["sync", "status", "--store", str(tmp_path / "c")])
    assert r.exit_code == 1 and "does not sync" in r.output


def test_fading_stays_on_its_device_and_a_forget_travels(tmp_path: Path) -> None:
    """A tier is derived: the sweep letting a memory fade on one device forgets it there
    only; the person's forget and restore are acts that sync."""
    with _mem(tmp_path / "a") as a, _mem(tmp_path / "b") as b:
        m = a.remember("the plumber's number is 555-0100", importance=0.1)
        b.sync_join(tmp_path / "folder", a.sync_init(tmp_path / "folder"))
        a.consolidate(now=time.time() + 400 * 86400)  # a year on: it faded on a
        assert a.get(m.id).tier == "forgotten"
        a.sync()
        b.sync()
        assert b.get(m.id).tier == "hot"
        b.forget(m.id)
        b.sync()
        a.sync()
        assert a.get(m.id).tier == "forgotten" and not a.store.get(m.id).meta.get("faded")
        a.restore(m.id)
        a.sync()
        b.sync()
        assert b.get(m.id).tier == "hot" and a.get(m.id).tier == "hot"


def test_encrypting_a_store_that_syncs_keeps_it_syncing(tmp_path: Path) -> None:
    from localmem import keys

    with _mem(tmp_path / "a") as a, _mem(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", a.sync_init(tmp_path / "folder"))
        device = b.sync_status()["device"]
        b.remember("written before the encryption")
    keys.encrypt(tmp_path / "b", keyring=True)  # its last changes not exported yet
    raw = (tmp_path / "b" / "SYNC").read_bytes()
    assert not raw.startswith(b"{") and device.encode() not in raw  # sealed now
    with _mem(tmp_path / "b") as b:
        assert b.sync_status()["device"] == device
        assert b.sync()["exported"] == 1  # what it had not exported yet goes out
    with _mem(tmp_path / "a") as a:
        a.sync()
        assert [m.text for m in a.list()] == ["written before the encryption"]


def test_a_conversation_is_summarized_on_the_device_it_happened_on(tmp_path: Path) -> None:
    with _mem(tmp_path / "a") as a, _mem(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", a.sync_init(tmp_path / "folder"))
        t0 = time.time() - 86400
        a.remember_many([{"text": f"turn {i} about the trip to Porto", "kind": "episodic",
                          "session": "s1", "when": t0 + i} for i in range(5)])  # fmt: skip
        a.sync()
        b.sync()
        assert len(b.list(session="s1")) == 5
        assert a.pending_summaries() == 1 and b.pending_summaries() == 0

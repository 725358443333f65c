"""An encrypted store's catalog (issue 25): SQLite3 Multiple Ciphers, ChaCha20-Poly1305 per
page, with the real SQLite, FTS5 and sqlite-vec. Nothing it holds is on disk in the clear;
a missing or wrong key is a key error that leaves the file alone, never "damage" that moves
it aside; real damage is still healed from the store."""

from __future__ import annotations

import secrets
from pathlib import Path

import apsw
import pytest

from localmem.catalog import Catalog
from localmem.catalog.catalog import encrypt_catalog
from localmem.catalog.cipher import header_kind
from localmem.errors import CorruptFileError, EncryptionKeyError, StorageError
from localmem.memstore import reconcile
from localmem.memstore.memstore import MemoryStore
from localmem.store import Store
from localmem.store import records as rec
from localmem.testing import HashEmbedder

KEY = bytes(range(32))
MARKER = "Zanzibarquokka7731"  # one word: FTS5 keeps it whole, in the clear when unencrypted
COLD_BITS = 384


def code(i: int) -> bytes:
    """A cold-tier sign code (384 bits) that differs from its neighbours' in a few bits."""
    return (i * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "little") * (COLD_BITS // 64)


def put(id: int, text: str, **meta: object) -> bytes:
    return rec.encode_put(id, text, {"type": "memory", "kind": "fact", "when": 1.0e9 + id, **meta},
                          None, None)  # fmt: skip


def fill(cat: Catalog, n: int = 40) -> None:
    """``n`` memories: hot ones, every fifth cold with a sign code, the third forgotten."""
    records = []
    for id in range(1, n + 1):
        meta: dict[str, object] = {"session": f"s{id % 3}"}
        if id % 5 == 0:
            meta.update(tier="cold", code=code(id).hex())
        if id == 3:
            meta.update(tier="forgotten", forgotten_at=2.0e9)
        text = f"Memory {id}: Caroline met Bob in Lisbon about {MARKER}"
        records.append((id, rec.PUT, put(id, text, **meta)))
    cat.apply(records, upto=n)
    cat.set_state("model", "hash-embedder")


def contents(cat: Catalog) -> dict[str, object]:
    """What a catalog holds, as its readers see it."""
    return {
        "rows": cat.all_rows(),
        "keyword": cat.keyword([MARKER], 100),
        "bob": cat.keyword(["Bob Lisbon"], 5),
        "entities": cat.with_entities(["caroline", "bob"], 100),
        "cold": cat.cold_search(code(10), 4),
        "state": {k: cat.state(k) for k in ("applied_lsn", "schema", "cold_bits", "model")},
        "tiers": cat.counts_by_tier(),
    }


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.parent.glob(path.name + "*"))}


def test_an_encrypted_catalog_works_as_a_plain_one(tmp_path):
    plain = Catalog(tmp_path / "plain.sqlite")
    enc = Catalog(tmp_path / "enc.sqlite", key=KEY)
    for cat in (plain, enc):
        fill(cat)
    want = contents(plain)
    assert len(want["keyword"]) == 39  # the forgotten one is out of FTS5
    assert want["cold"][0][0] == 10 and len(want["cold"]) == 4
    assert contents(enc) == want
    assert enc._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert enc._db.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    enc.close()
    plain.close()
    again = Catalog(tmp_path / "enc.sqlite", key=KEY)
    assert contents(again) == want
    assert again.vacuum()["after"] > 0  # VACUUM's copy stays in memory, encrypted on write
    assert contents(again) == want
    again.close()
    assert header_kind(tmp_path / "enc.sqlite") == "encrypted"
    assert header_kind(tmp_path / "plain.sqlite") == "plain"


def test_no_byte_of_content_is_on_disk_in_the_clear(tmp_path):
    for name, key in (("plain", None), ("enc", KEY)):
        path = tmp_path / f"{name}.sqlite"
        cat = Catalog(path, key=key)
        fill(cat)
        open_files = files(path)  # WAL not yet checkpointed: its frames hold the rows
        assert {f"{name}.sqlite", f"{name}.sqlite-wal", f"{name}.sqlite-shm"} <= set(open_files)
        cat.close()
        closed = files(path)
        seen = [n for n, b in (*open_files.items(), *closed.items()) if MARKER.encode() in b]
        if key is None:  # the control: the marker is there to be found
            assert seen, "the plain catalog should show the marker"
        else:
            assert seen == [], f"the marker is in the clear in {seen}"
            assert not any(b"Caroline" in b or b"Lisbon" in b for b in open_files.values())


@pytest.mark.parametrize("key", [None, secrets.token_bytes(32)], ids=["no key", "wrong key"])
def test_a_missing_or_wrong_key_is_a_key_error_and_touches_nothing(tmp_path, key):
    path = tmp_path / "catalog.sqlite"
    cat = Catalog(path, key=KEY)
    fill(cat)
    cat.close()
    before = files(path)
    with pytest.raises(EncryptionKeyError, match="is encrypted and did not open"):
        Catalog(path, key=key)
    with pytest.raises(EncryptionKeyError, match=str(path)):
        reconcile.open_catalog(path, key)  # not healed: a rebuild would move it aside
    assert files(path) == before
    assert contents(Catalog(path, key=KEY))["tiers"]


def test_a_plain_catalog_opened_with_a_key_is_a_key_error(tmp_path):
    path = tmp_path / "catalog.sqlite"
    cat = Catalog(path)
    fill(cat)
    cat.close()
    before = files(path)
    for verified in (False, True):
        with pytest.raises(EncryptionKeyError, match="is not encrypted"):
            reconcile.open_catalog(path, KEY, key_verified=verified)
    assert files(path) == before


def test_a_key_is_32_raw_bytes(tmp_path):
    for bad in (b"passphrase", KEY + b"x", KEY.hex()):
        with pytest.raises(ValueError, match="32 raw bytes"):
            Catalog(tmp_path / "c.sqlite", key=bad)  # type: ignore[arg-type]


def flipped(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def encrypted_catalog(path: Path) -> int:
    """An encrypted catalog, checkpointed (every page in the file): its page size."""
    cat = Catalog(path, key=KEY)
    fill(cat)
    cat._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = int(cat._db.execute("PRAGMA page_size").fetchone()[0])
    cat.close()
    assert path.stat().st_size >= 8 * size
    return size


def test_damage_past_the_first_page_is_damage_and_heals(tmp_path):
    # Every page but the first failing its Poly1305 tag is SQLITE_CORRUPT, whatever the
    # key: damage, healed by a new (encrypted) catalog that the store refills.
    path = tmp_path / "catalog.sqlite"
    size = encrypted_catalog(path)
    flipped(path, size + 100)  # page 2: the state table, read as the catalog opens
    with pytest.raises(CorruptFileError):
        Catalog(path, key=KEY)
    cat = reconcile.open_catalog(path, KEY)
    assert cat.count() == 0 and cat.state("schema") is not None
    cat.close()
    assert [f.name for f in tmp_path.glob("catalog.sqlite.corrupt-*")]
    assert header_kind(path) == "encrypted"
    Catalog(path, key=KEY).close()
    with pytest.raises(EncryptionKeyError):
        Catalog(path)


def test_a_damaged_page_read_later_is_damage(tmp_path):
    path = tmp_path / "catalog.sqlite"
    size = encrypted_catalog(path)
    flipped(path, path.stat().st_size - size // 2)  # the last page: rows or an index
    cat = Catalog(path, key=KEY)  # opens: the page is not read yet
    with pytest.raises(apsw.CorruptError):
        for table in ("memories", "memories_fts", "entities", "cold_codes"):
            cat._db.execute(f"SELECT * FROM {table}").fetchall()
    assert isinstance(apsw.CorruptError("x"), reconcile.DAMAGE)
    cat.close()


def test_a_damaged_first_page_is_a_key_error_unless_the_key_is_vouched_for(tmp_path):
    # The first page failing its tag looks exactly like a wrong key (SQLITE_NOTADB). A key
    # the store vouched for makes it damage; any other key leaves the file alone.
    path = tmp_path / "catalog.sqlite"
    encrypted_catalog(path)
    flipped(path, 200)
    before = files(path)
    with pytest.raises(EncryptionKeyError):
        reconcile.open_catalog(path, KEY)
    assert files(path) == before
    cat = reconcile.open_catalog(path, KEY, key_verified=True)
    assert cat.count() == 0
    cat.close()
    assert list(tmp_path.glob("catalog.sqlite.corrupt-*"))


def test_a_truncated_encrypted_catalog_is_damage(tmp_path):
    path = tmp_path / "catalog.sqlite"
    size = encrypted_catalog(path)
    path.write_bytes(path.read_bytes()[: size + 10])  # page 2 cut short
    with pytest.raises(CorruptFileError):
        Catalog(path, key=KEY)
    path.write_bytes(path.read_bytes()[: size // 2])  # the first page cut: no key makes it whole
    with pytest.raises(CorruptFileError):
        Catalog(path, key=KEY)
    path.write_bytes(path.read_bytes()[:10])  # not even a header
    with pytest.raises(CorruptFileError):
        Catalog(path, key=KEY)


def test_encrypt_catalog_copies_a_plain_catalog_whole(tmp_path):
    src = tmp_path / "catalog.sqlite"
    plain = Catalog(src)
    fill(plain)
    plain.note_unreadable(99, 41, ValueError("an item this version cannot read"))
    want = {**contents(plain), "unreadable": plain.unreadable()}
    before = files(src)
    assert f"{src.name}-wal" in before  # the rows are still in the WAL: the copy reads them
    dst = tmp_path / "new" / "catalog.sqlite"
    dst.parent.mkdir()
    encrypt_catalog(src, dst, KEY)
    after = files(src)
    for name in (src.name, f"{src.name}-wal"):
        assert after[name] == before[name], f"{name} changed"
    plain.close()
    assert sorted(f.name for f in dst.parent.iterdir()) == ["catalog.sqlite"]
    assert dst.stat().st_mode & 0o777 == 0o600
    assert MARKER.encode() not in dst.read_bytes()
    enc = Catalog(dst, key=KEY)
    assert {**contents(enc), "unreadable": enc.unreadable()} == want
    fill(enc, 45)  # and it takes writes: the vec0 and FTS5 tables work in the copy
    assert len(enc.keyword([MARKER], 100)) == 44
    enc.close()
    with pytest.raises(EncryptionKeyError):
        Catalog(dst)
    with pytest.raises(StorageError, match="already exists"):
        encrypt_catalog(src, dst, KEY)
    Catalog(dst, key=KEY).close()  # left as it was


def records_of(path: Path, key: bytes | None) -> MemoryStore:
    """A MemoryStore over a plain store with an encrypted catalog, opened as
    ``MemoryStore.open`` does with a key the store vouched for."""
    store = Store.open(path, dim=HashEmbedder().dim, metric="cos", sync="off")
    try:
        cat = reconcile.open_catalog(path / "catalog.sqlite", key, key_verified=key is not None)
    except BaseException:
        store.close()
        raise
    ms = MemoryStore(store, cat, HashEmbedder(), catalog_key=key)
    ms.reconcile()
    return ms


def test_a_memory_store_keeps_its_catalog_key_through_a_heal(tmp_path):
    path = tmp_path / "s"
    ms = records_of(path, KEY)
    made = ms.write_many([{"text": f"{MARKER} fact {i}"} for i in range(20)], progress=None,
                         batch=10)  # fmt: skip
    ms.close()
    cat = path / "catalog.sqlite"
    assert header_kind(cat) == "encrypted"
    flipped(cat, 300)  # the first page: under a key the store vouched for, damage
    ms = records_of(path, KEY)
    try:
        assert sorted(ms.catalog.all_ids()) == sorted(m.id for m in made)
        assert len(ms.catalog.keyword([MARKER], 100)) == 20
        ms.heal(CorruptFileError("a read failed"))  # a new catalog: encrypted too
        assert header_kind(cat) == "encrypted"
        assert len(ms.catalog.keyword([MARKER], 100)) == 20
    finally:
        ms.close()
    assert list(path.glob("catalog.sqlite.corrupt-*"))
    assert not any(MARKER.encode() in b for b in files(cat).values())
    with pytest.raises(EncryptionKeyError):
        records_of(path, None)

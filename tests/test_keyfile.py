"""An encrypted store's KEY file: the data key wrapped with an Argon2id-derived key and/or
a key the OS keyring holds (keyrings.alt's file backend here, see conftest); the right
passphrase opens it, a wrong one or any changed byte does not, and a new passphrase
re-wraps the same data key."""

from __future__ import annotations

import json
import os
import stat

import pytest

from localmem import errors
from localmem.store import keyfile

FAST = {"time_cost": 1, "memory_kib": 64, "parallelism": 1}  # the tests' own; stored per file


def test_the_passphrase_opens_the_data_key_and_the_file_is_private(tmp_path):
    dek = keyfile.create(tmp_path, "store-1", passphrase="correct horse", params=FAST)
    assert len(dek) == 32 and keyfile.unlock(tmp_path, "correct horse") == dek
    f = tmp_path / keyfile.KEY_FILE
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert dek.hex() not in f.read_text() and b"correct horse" not in f.read_bytes()
    doc = json.loads(f.read_text())
    (wrap,) = doc["wraps"]
    assert wrap["argon2id"]["memory_kib"] == 64
    assert len(bytes.fromhex(wrap["argon2id"]["salt"])) == 16
    assert doc["key_id"] == keyfile.key_id(dek)
    with pytest.raises(errors.InvalidArgumentError, match="already has a key"):
        keyfile.create(tmp_path, "store-1", passphrase="another", params=FAST)


def test_a_wrong_passphrase_or_no_key_file_is_a_clear_error(tmp_path):
    keyfile.create(tmp_path, "s", passphrase="right", params=FAST)
    with pytest.raises(errors.EncryptionKeyError, match="wrong one"):
        keyfile.unlock(tmp_path, "wrong")
    with pytest.raises(errors.InvalidArgumentError, match="non-empty"):
        keyfile.unlock(tmp_path, "")
    with pytest.raises(errors.EncryptionKeyError, match="not encrypted"):
        keyfile.unlock(tmp_path / "nowhere", "right")


def test_rewrap_keeps_the_data_key_and_retires_the_old_passphrase(tmp_path):
    dek = keyfile.create(tmp_path, "s", passphrase="old", params=FAST)
    salt = json.loads((tmp_path / "KEY").read_text())["wraps"][0]["argon2id"]["salt"]
    keyfile.rewrap(tmp_path, keyfile.unlock(tmp_path, "old"), passphrase="new", params=FAST)
    assert keyfile.unlock(tmp_path, "new") == dek
    assert json.loads((tmp_path / "KEY").read_text())["wraps"][0]["argon2id"]["salt"] != salt
    with pytest.raises(errors.EncryptionKeyError):
        keyfile.unlock(tmp_path, "old")
    with pytest.raises(errors.EncryptionKeyError, match="not the data key"):
        keyfile.rewrap(tmp_path, bytes(32), passphrase="newer", params=FAST)
    assert keyfile.unlock(tmp_path, "new") == dek


def test_the_keyring_holds_a_key_of_its_own_and_can_be_dropped(tmp_path):
    dek = keyfile.create(tmp_path, "s", passphrase="pw", use_keyring=True, params=FAST)
    assert keyfile.unlock(tmp_path) == dek  # no passphrase: the keyring's wrap
    assert keyfile.describe(tmp_path)["held_by"] == ["argon2id", "keyring"]
    keyfile.drop_keyring(tmp_path)
    with pytest.raises(errors.EncryptionKeyError, match="keyring does not hold"):
        keyfile.unlock(tmp_path)
    assert keyfile.unlock(tmp_path, "pw") == dek
    keyfile.add_keyring(tmp_path, dek)
    assert keyfile.unlock(tmp_path) == dek
    import keyring

    old_user = keyfile.read(tmp_path)["wraps"][-1]["keyring"]["user"]
    keyfile.rewrap(tmp_path, dek, use_keyring=True)  # keyring only: the passphrase goes
    new_user = keyfile.read(tmp_path)["wraps"][0]["keyring"]["user"]
    assert new_user != old_user  # a new entry beside the old: a backup copy may still use it
    assert keyring.get_password(keyfile.KEYRING_SERVICE, old_user) is not None
    assert keyring.get_password(keyfile.KEYRING_SERVICE, new_user) is not None
    with pytest.raises(errors.EncryptionKeyError, match="no passphrase"):
        keyfile.unlock(tmp_path, "pw")
    with pytest.raises(errors.InvalidArgumentError, match="only key"):
        keyfile.drop_keyring(tmp_path)
    assert keyfile.unlock(tmp_path) == dek


def test_every_changed_byte_of_the_key_file_is_refused_never_a_wrong_key(tmp_path):
    dek = keyfile.create(tmp_path, "s", passphrase="pw", params=FAST)
    good = (tmp_path / "KEY").read_bytes()
    outcomes = {"wrong key": 0, "corrupt": 0, "same": 0}
    for i in range(len(good)):
        for flip in (0x01, 0x20):
            bad = bytearray(good)
            bad[i] ^= flip
            (tmp_path / "KEY").write_bytes(bytes(bad))
            try:
                got = keyfile.unlock(tmp_path, "pw")
            except errors.EncryptionKeyError:
                outcomes["wrong key"] += 1
            except (errors.CorruptFileError, errors.InvalidArgumentError):
                outcomes["corrupt"] += 1
            else:  # only a change JSON does not see (whitespace, a hex digit's case) opens
                assert got == dek
                outcomes["same"] += 1
    for cut in range(0, len(good), 7):
        (tmp_path / "KEY").write_bytes(good[:cut])
        with pytest.raises((errors.EncryptionKeyError, errors.CorruptFileError)):
            keyfile.unlock(tmp_path, "pw")
    assert outcomes["wrong key"] + outcomes["corrupt"] > 0.9 * 2 * len(good), outcomes

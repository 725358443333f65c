"""The AEAD every encrypted file will use (XChaCha20-Poly1305, Monocypher in the native core),
against libsodium's (PyNaCl) on random keys, nonces, associated data and lengths; and what
authentication must refuse: any flipped bit, a cut, another key, other associated data."""

from __future__ import annotations

import os
import random

import nacl.bindings as sodium
import pytest

from localmem import _core, errors

LENGTHS = [0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 1000, 4096, 65_537]


@pytest.mark.parametrize("n", LENGTHS)
def test_equals_libsodium(n):
    rng = random.Random(n)
    for _ in range(20):
        key, nonce = rng.randbytes(32), rng.randbytes(24)
        ad, msg = rng.randbytes(rng.randrange(0, 64)), rng.randbytes(n)
        sealed = _core.aead_seal(key, msg, ad, nonce)
        want = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(msg, ad, nonce, key)
        assert sealed == nonce + want  # ciphertext | tag, after the nonce
        assert _core.aead_open(key, sealed, ad) == msg
        assert sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], ad, nonce, key) == msg


def test_every_flipped_bit_cut_other_key_or_other_ad_is_refused():
    key, ad, msg = os.urandom(32), b"record header", os.urandom(200)
    sealed = _core.aead_seal(key, msg, ad)
    refused = 0
    for i in range(len(sealed)):
        for bit in (0, 3, 7):
            bad = bytearray(sealed)
            bad[i] ^= 1 << bit
            with pytest.raises(errors.CorruptFileError, match="failed authentication"):
                _core.aead_open(key, bytes(bad), ad)
            refused += 1
    for cut in (0, 1, 39, 40, len(sealed) - 1):
        with pytest.raises(errors.CorruptFileError):
            _core.aead_open(key, sealed[:cut], ad)
    with pytest.raises(errors.CorruptFileError):
        _core.aead_open(os.urandom(32), sealed, ad)
    with pytest.raises(errors.CorruptFileError):
        _core.aead_open(key, sealed, ad + b"!")
    assert refused == 3 * len(sealed)


def test_nonces_are_random_and_the_arguments_checked():
    key = os.urandom(32)
    nonces = {_core.aead_seal(key, b"same message")[:24] for _ in range(10_000)}
    assert len(nonces) == 10_000
    with pytest.raises(errors.InvalidArgumentError, match="key must be 32 bytes"):
        _core.aead_seal(b"short", b"x")
    with pytest.raises(errors.InvalidArgumentError, match="nonce must be 24 bytes"):
        _core.aead_seal(key, b"x", b"", b"\0" * 12)
    assert _core.aead_open(key, _core.aead_seal(key, memoryview(b"view"))) == b"view"


def test_one_key_object_never_repeats_a_nonce_even_across_fork():
    """A store key seals every record: its nonces are a random 128-bit prefix and a 64-bit
    count. A forked child must not continue its parent's count under the same prefix."""
    key = _core.AeadKey(os.urandom(32))
    seen = [key.seal(b"m")[:24] for _ in range(1000)]
    assert len(set(seen)) == 1000 and len({n[:16] for n in seen}) == 1  # one prefix, counted
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: seal once, send the nonce, leave at once
        os.write(w, key.seal(b"m")[:24])
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 24)
    os.close(r)
    os.close(w)
    mine = key.seal(b"m")[:24]
    assert child[:16] != mine[:16] and child not in seen  # the child drew its own prefix
    assert key.open(key.seal(b"data", b"ad"), b"ad") == b"data"
    same = os.urandom(32)
    assert _core.AeadKey(same).key_id == _core.AeadKey(same).key_id != 0
    assert _core.AeadKey(same).key_id != _core.AeadKey(os.urandom(32)).key_id

"""Every SIMD kernel must equal the scalar kernel exactly, and both must equal numpy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from localmem import _core, build_info
from localmem.errors import InvalidArgumentError

DIMS = [1, 3, 15, 16, 17, 97, 384, 768, 1023]
KERNELS = _core.available_kernels()


def numpy_scores(q, qs, d, ds):
    dots = q.astype(np.int64) @ d.astype(np.int64).T
    return dots.astype(np.float32) * (qs[:, None] * ds[None, :])


@pytest.mark.parametrize("dim", DIMS)
def test_every_kernel_equals_scalar_and_numpy(dim, rng):
    # Query and row counts that are not multiples of any register tile (4 x 4 blocks).
    for nq, n in [(1, 1), (3, 17), (5, 33), (9, 70)]:
        q = rng.integers(-127, 128, (nq, dim), dtype=np.int8)
        d = rng.integers(-127, 128, (n, dim), dtype=np.int8)
        qs = rng.random(nq, dtype=np.float32) + 0.01
        ds = rng.random(n, dtype=np.float32) + 0.01
        ref = _core.score_matrix(q, qs, d, ds, "scalar")
        np.testing.assert_array_equal(ref, numpy_scores(q, qs, d, ds))
        for kernel in KERNELS:
            out = _core.score_matrix(q, qs, d, ds, kernel)
            np.testing.assert_array_equal(out, ref, err_msg=f"kernel {kernel}, dim {dim}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_codes_do_not_saturate(kernel):
    # PMADDUBSW saturates int16 pairs; [-127, 127] codes must keep every sum exact.
    dim = 1023
    ones = np.ones(1, np.float32)
    for qv, dv in [(127, 127), (127, -127), (-127, -127), (-127, 127)]:
        q = np.full((1, dim), qv, np.int8)
        d = np.full((1, dim), dv, np.int8)
        out = _core.score_matrix(q, ones, d, ones, kernel)
        assert out[0, 0] == np.float32(qv * dv * dim)


def test_this_machine_uses_a_simd_kernel():
    info = build_info()
    assert info["kernel"] == info["kernels_available"][-1]
    if "avx2" in info["cpu_features"]:
        assert info["kernel"] != "scalar"
    assert not info["march_native"]


def test_codes_outside_range_are_refused(rng):
    q = np.full((1, 8), -128, np.int8)
    one = np.ones(1, np.float32)
    with pytest.raises(InvalidArgumentError, match=r"\[-127, 127\]"):
        _core.score_matrix(q, one, q, one, "scalar")


def test_unknown_kernel_name_lists_the_available_ones():
    q = np.zeros((1, 4), np.int8)
    one = np.ones(1, np.float32)
    with pytest.raises(InvalidArgumentError, match="scalar"):
        _core.score_matrix(q, one, q, one, "sse9")


def _kernel_in_subprocess(value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LOCALMEM_KERNEL=value)
    code = "import localmem; print(localmem.build_info()['kernel'])"
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_environment_variable_forces_a_kernel(kernel):
    assert _kernel_in_subprocess(kernel).stdout.strip() == kernel


def test_environment_variable_cannot_select_a_missing_kernel():
    out = _kernel_in_subprocess("no_such_kernel")
    assert out.stdout.strip() == build_info()["kernel"]
    assert "LOCALMEM_KERNEL=no_such_kernel" in out.stderr


def test_index_search_is_identical_under_every_kernel(rng):
    from localmem import Int8Index

    x = rng.standard_normal((1000, 97)).astype(np.float32)
    index = Int8Index(97)
    index.add(np.arange(1000), x)
    ref = index.search(x[:40], 10, kernel="scalar")
    for kernel in KERNELS:
        ids, scores = index.search(x[:40], 10, kernel=kernel)
        np.testing.assert_array_equal(ids, ref[0])
        np.testing.assert_array_equal(scores, ref[1])

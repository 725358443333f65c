from __future__ import annotations

import numpy as np
import pytest

from localmem import quantize
from localmem.errors import InvalidArgumentError


def numpy_quantize(x):
    scale = (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1), scale)
    codes = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
    codes[scale == 0] = 0
    return codes, scale


@pytest.mark.parametrize("dim", [1, 3, 16, 97, 384, 1023])
def test_matches_numpy_reference_exactly(dim, rng):
    x = (rng.standard_normal((200, dim)) * rng.uniform(0.01, 100, (200, 1))).astype(np.float32)
    codes, scales = quantize(x)
    ref_codes, ref_scales = numpy_quantize(x)
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(codes, ref_codes)
    assert np.abs(codes).max(axis=1).min() == 127  # the largest value maps to +-127


def test_rounds_half_to_even():
    x = np.array([[254.0, 1.0, 3.0, -1.0, -3.0, 5.0]], np.float32)  # scale 2: x/2 = .5, 1.5
    codes, scales = quantize(x)
    assert scales[0] == 2.0
    assert codes[0].tolist() == [127, 0, 2, 0, -2, 2]


def test_zero_vector_has_zero_scale():
    codes, scales = quantize(np.zeros((2, 8), np.float32))
    assert scales.tolist() == [0.0, 0.0]
    assert not codes.any()


def test_single_vector_round_trip_error_is_bounded(rng):
    x = rng.standard_normal(384).astype(np.float32)
    codes, scales = quantize(x)
    assert codes.shape == (384,)
    err = np.abs(codes.astype(np.float32) * scales[0] - x).max()
    assert err <= scales[0] / 2 * 1.0001


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_named(bad):
    x = np.ones((3, 5), np.float32)
    x[2, 4] = bad
    with pytest.raises(InvalidArgumentError, match=r"vectors\[2, 4\].*finite"):
        quantize(x)


def test_wrong_dtype_names_the_fix():
    with pytest.raises(InvalidArgumentError, match=r"astype\(numpy.float32\)"):
        quantize(np.ones((2, 4), np.float64))

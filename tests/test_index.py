"""Int8Index: exact search over codes, filters, removal, compaction, threads, bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from localmem import Int8Index
from localmem.errors import DuplicateIdError, InvalidArgumentError, UnknownIdError
from localmem.testing import cluster_centres, clustered_vectors, exact_top_k, recall_at_k


def reference_search(index: Int8Index, ids: np.ndarray, queries: np.ndarray, k: int):
    """Numpy top-k on the index's own codes, with the index's tie rule (smaller id first)."""
    from localmem import quantize

    codes, scales = index.get_codes(ids)
    qc, qs = quantize(queries)
    dots = qc.astype(np.int64) @ codes.astype(np.int64).T
    scores = dots.astype(np.float32) * (qs[:, None] * scales[None, :])
    out_ids = np.empty((len(queries), k), np.int64)
    out_scores = np.empty((len(queries), k), np.float32)
    for i, s in enumerate(scores):
        order = np.lexsort((ids, -s))[:k]  # last key first: score desc, then id asc
        out_ids[i], out_scores[i] = ids[order], s[order]
    return out_ids, out_scores


@pytest.fixture
def small(rng):
    # Few distinct values so that many scores tie exactly; ids shuffled and sparse.
    x = rng.integers(-2, 3, (3000, 24)).astype(np.float32)
    x[:, 0] = 2.0  # every row has the same scale: equal codes give equal scores
    ids = rng.choice(10**12, size=3000, replace=False).astype(np.int64)
    index = Int8Index(24)
    index.add(ids, x)
    return index, ids, x


@pytest.mark.parametrize("threads", [1, 2, 0])
def test_search_equals_numpy_reference_with_ties(small, rng, threads):
    index, ids, _x = small
    q = rng.integers(-2, 3, (50, 24)).astype(np.float32)
    got_ids, got_scores = index.search(q, 25, threads=threads)
    ref_ids, ref_scores = reference_search(index, ids, q, 25)
    np.testing.assert_array_equal(got_scores, ref_scores)
    np.testing.assert_array_equal(got_ids, ref_ids)


def test_single_query_returns_1d_and_matches_batch(small, rng):
    index, _ids, _x = small
    q = rng.standard_normal(24).astype(np.float32)
    one_ids, one_scores = index.search(q, 7)
    batch_ids, batch_scores = index.search(q[None, :], 7)
    assert one_ids.shape == (7,) and one_scores.shape == (7,)
    np.testing.assert_array_equal(one_ids, batch_ids[0])
    np.testing.assert_array_equal(one_scores, batch_scores[0])


def test_single_query_split_across_threads_equals_one_thread(rng):
    x = rng.standard_normal((40_000, 64)).astype(np.float32)
    index = Int8Index(64)
    index.add(np.arange(40_000), x)
    q = rng.standard_normal(64).astype(np.float32)
    a = index.search(q, 50, threads=1)
    b = index.search(q, 50, threads=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_recall_against_float32_exact_on_clustered_data():
    dim, n, nq, k = 384, 20_000, 300, 10
    centres = cluster_centres(200, dim, seed=1)
    x = clustered_vectors(n, dim, centres=centres, seed=2)
    q = clustered_vectors(nq, dim, centres=centres, seed=3)
    truth = exact_top_k(q, x, k)
    index = Int8Index(dim)
    index.add(np.arange(n), x, keep_fp32=True)
    codes_only = recall_at_k(index.search(q, k)[0], truth)
    reranked = recall_at_k(index.search(q, k, rerank=4)[0], truth)
    assert codes_only >= 0.98, codes_only
    assert reranked >= 0.995, reranked


def test_rerank_scores_are_exact_fp32_dots(rng):
    x = rng.standard_normal((500, 32)).astype(np.float32)
    index = Int8Index(32)
    index.add(np.arange(500), x, keep_fp32=True)
    q = rng.standard_normal(32).astype(np.float32)
    ids, scores = index.search(q, 5, rerank=10)
    np.testing.assert_allclose(scores, x[ids] @ q, rtol=1e-5)
    assert list(ids) == list(np.argsort(-(x @ q))[:5])


def test_cosine_metric_ignores_vector_length(rng):
    x = rng.standard_normal((300, 16)).astype(np.float32)
    index = Int8Index(16, metric="cos")
    index.add(np.arange(300), x * rng.uniform(0.1, 50, (300, 1)).astype(np.float32))
    q = rng.standard_normal(16).astype(np.float32)
    ids, scores = index.search(q * 1000, 3)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = xn @ (q / np.linalg.norm(q))
    np.testing.assert_allclose(scores, cos[ids], atol=0.02)
    assert ids[0] == np.argmax(cos)


def test_allow_and_deny_filters(small, rng):
    index, ids, _ = small
    q = rng.standard_normal((10, 24)).astype(np.float32)
    allowed = ids[::7]
    got, _ = index.search(q, 10, allow=allowed)
    assert set(got.ravel()) <= set(allowed)
    ref, _ = reference_search(index, allowed, q, 10)
    np.testing.assert_array_equal(got, ref)

    denied = index.search(q, 5)[0].ravel()
    got, _ = index.search(q, 5, deny=denied)
    assert not set(got.ravel()) & set(denied)


def test_filter_leaving_fewer_than_k_pads(small, rng):
    index, ids, _ = small
    allow = [int(ids[3]), int(ids[9]), -42]  # an unknown id in a filter is simply absent
    got, scores = index.search(rng.standard_normal(24).astype(np.float32), 5, allow=allow)
    assert set(got[:2]) == {ids[3], ids[9]}
    assert list(got[2:]) == [-1, -1, -1]
    assert np.all(np.isneginf(scores[2:]))


def test_empty_index_and_k_larger_than_index(rng):
    index = Int8Index(8)
    ids, scores = index.search(rng.standard_normal((3, 8)).astype(np.float32), 10)
    assert ids.shape == (3, 0) and scores.shape == (3, 0)
    index.add([5, 6], rng.standard_normal((2, 8)).astype(np.float32))
    ids, _ = index.search(rng.standard_normal((3, 8)).astype(np.float32), 10)
    assert ids.shape == (3, 2)
    assert set(ids[0]) == {5, 6}


def test_remove_compact_and_readd(rng):
    x = rng.standard_normal((1000, 20)).astype(np.float32)
    index = Int8Index(20)
    index.add(np.arange(1000), x, keep_fp32=True)
    gone = np.arange(0, 1000, 3)
    assert index.remove(gone) == len(gone)
    assert len(index) == 1000 - len(gone)
    assert 0 not in index and 1 in index
    q = rng.standard_normal((20, 20)).astype(np.float32)
    before = index.search(q, 30, rerank=3)
    assert not set(before[0].ravel()) & set(gone)
    assert index.stats()["tombstones"] == len(gone)
    assert index.compact() == len(gone)
    assert index.stats()["tombstones"] == 0
    after = index.search(q, 30, rerank=3)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    # a removed id may be used again
    index.add([0], x[:1])
    assert 0 in index and len(index) == 1000 - len(gone) + 1


def test_removing_most_rows_compacts_by_itself(rng):
    index = Int8Index(8)
    index.add(np.arange(200), rng.standard_normal((200, 8)).astype(np.float32))
    index.remove(np.arange(150))
    st = index.stats()
    assert st["tombstones"] == 0 and st["rows"] == 50 and st["live"] == 50


def test_remove_unknown_id_changes_nothing(small):
    index, ids, _ = small
    with pytest.raises(UnknownIdError, match="-5 is not in the index"):
        index.remove([int(ids[0]), -5])
    assert int(ids[0]) in index
    assert index.remove([int(ids[0]), -5], missing_ok=True) == 1
    assert int(ids[0]) not in index


def test_duplicate_ids_are_refused_and_batch_is_atomic(rng):
    index = Int8Index(4)
    index.add([1, 2], np.ones((2, 4), np.float32))
    with pytest.raises(DuplicateIdError, match="id 2 is already in the index"):
        index.add([3, 2], np.ones((2, 4), np.float32))
    with pytest.raises(DuplicateIdError, match="appears more than once"):
        index.add([7, 7], np.ones((2, 4), np.float32))
    bad = np.ones((2, 4), np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match="finite"):
        index.add([8, 9], bad)
    assert len(index) == 2 and 3 not in index and 8 not in index


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda ix: ix.add([1], np.ones((1, 8), np.float64)), r"dtype float32.*astype"),
        (lambda ix: ix.add([1, 2], np.ones((2, 16), np.float32)[:, ::2]), "ascontiguousarray"),
        (lambda ix: ix.add([1], np.ones((1, 9), np.float32)), "9 columns but the index has dim 8"),
        (lambda ix: ix.add([1, 2], np.ones((1, 8), np.float32)), "2 ids for 1 vectors"),
        (lambda ix: ix.add([1.5], np.ones((1, 8), np.float32)), "integers"),
        (lambda ix: ix.add([1], np.ones((1, 1, 8), np.float32)), "2-D"),
        (lambda ix: ix.search(np.ones(8, np.float32), 0), "k must be at least 1"),
        (lambda ix: ix.search(np.ones(8, np.float32), -3), "k must be at least 1"),
        (lambda ix: ix.search(np.ones(8, np.float32), 2.5), "k must be an integer"),
        (lambda ix: ix.search(np.full(8, np.inf, np.float32), 1), r"queries\[0, 0\].*finite"),
        (lambda ix: ix.search(np.ones((2, 8), np.int32), 1), "dtype float32"),
        (lambda ix: ix.search(np.ones(8, np.float32), 1, rerank=-1), "rerank"),
        (lambda ix: ix.search(np.ones(8, np.float32), 1, threads=-1), "threads"),
        (lambda ix: ix.search(np.ones(8, np.float32), 1, allow=np.ones(2)), "integers"),
    ],
)
def test_bad_input_names_the_fix(call, pattern):
    index = Int8Index(8)
    index.add([100], np.ones((1, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match=pattern):
        call(index)
    assert len(index) == 1


def test_bad_constructor_arguments():
    with pytest.raises(InvalidArgumentError, match="dim must be between"):
        Int8Index(0)
    with pytest.raises(InvalidArgumentError, match="metric must be"):
        Int8Index(8, metric="l2")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="all zeros"):
        Int8Index(4, metric="cos").add([1], np.zeros((1, 4), np.float32))


def test_errors_are_also_builtin_exceptions():
    index = Int8Index(4)
    with pytest.raises(ValueError):
        index.search(np.ones(4, np.float64), 1)
    with pytest.raises(KeyError):
        index.remove([1])


def test_concurrent_search_and_add_from_python_threads(rng):
    dim = 32
    index = Int8Index(dim)
    base = rng.standard_normal((5000, dim)).astype(np.float32)
    index.add(np.arange(5000), base)
    q = base[:50]
    errors: list[BaseException] = []

    def searcher():
        try:
            for _ in range(30):
                ids, _ = index.search(q, 1)
                assert np.array_equal(ids[:, 0], np.arange(50))  # each query finds itself
        except BaseException as e:
            errors.append(e)

    def adder():
        try:
            for i in range(30):
                extra = rng.standard_normal((100, dim)).astype(np.float32) * 0.01
                index.add(np.arange(100) + 10_000 * (i + 1), extra)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [
        threading.Thread(target=adder)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == 5000 + 30 * 100


def test_search_releases_the_gil(rng):
    x = rng.standard_normal((200_000, 64)).astype(np.float32)
    index = Int8Index(64)
    index.add(np.arange(len(x)), x)
    q = rng.standard_normal((300, 64)).astype(np.float32)
    t0 = time.perf_counter()
    index.search(q, 10, threads=1)
    alone = time.perf_counter() - t0

    done = threading.Event()
    ticks = 0

    def work():
        index.search(q, 10, threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1  # pure Python: only runs while the search has released the GIL
    t.join()
    assert alone > 0.01
    assert ticks > 1000, ticks

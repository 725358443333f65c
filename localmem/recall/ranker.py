"""The re-ranking stage: gradient-boosted trees over the fused top candidates' features.

No cross-encoder ships offline in any registry we can install from (issue 27's survey), so
the second stage is learned to rank over features that say why a memory may answer: its
channel scores, its neighbours' (the answer is often the reply next to the matching turn),
its session's, and the shape of its text (``features.py`` names them). The trees are
trained with LightGBM's lambdarank on the LoCoMo dev split by ``bench/recall_quality.py
--train`` (leave-one-conversation-out figures in bench/README.md) and shipped as JSON;
LightGBM is not needed to run them: prediction here is plain numpy, all trees at once.

A model file is untrusted input like any other: its shape is checked whole before use, and
a bad one raises ``CorruptFileError`` naming the file.
"""

from __future__ import annotations

import json
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from localmem.errors import CorruptFileError, InvalidArgumentError
from localmem.recall.features import FEATURES

FORMAT = "localmem-ranker/1"
RANKER_ENV = "LOCALMEM_RANKER"  # a ranker JSON path, or "off" for the fused order alone
SHIPPED = "ranker.json"
MAX_TREES = 2_000
MAX_NODES = 65_536  # all trees together: the scoring's working set is rows x nodes x 16 bytes
MAX_FILE_BYTES = 16 << 20
MAX_LEAF = 1e6  # a leaf beyond this is no trained model's (the shipped ones are below 10)
FIELDS = ("feature", "threshold", "left", "right", "leaf")
MAX_LEAVES = 64  # a tree's leaves are bits of one uint64 (QuickScorer)
ALL_LEAVES = np.uint64(2**64 - 1)


class Ranker(Protocol):
    """What the retriever needs of a re-ranker."""

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row of ``x`` (rows x FEATURES); higher ranks first."""
        ...


class TreeRanker:
    """An ensemble of binary regression trees; ``score(X)`` sums their leaves.

    Node arrays are padded into (trees x nodes) matrices and scored QuickScorer-style: every
    node of every tree tested at once, then per tree a bitwise AND of the leaves each failed
    test leaves standing (30 rows x 80 trees: ~0.2 ms, not 2,400 Python tree walks).
    Children are node indices; a negative child ``~j`` is leaf ``j``.
    """

    def __init__(self, trees: list[dict[str, Any]], name: str) -> None:
        """``trees`` as ``from_json`` checked them."""
        self.name = name
        n = len(trees)
        width = max(1, max(len(t["feature"]) for t in trees))
        self._feat = np.zeros((n, width), np.int64)
        self._thr = np.full((n, width), np.inf)  # padding: always true, eliminates nothing
        self._mask = np.full((n, width), ALL_LEAVES, np.uint64)
        self._leaf = np.zeros((n, MAX_LEAVES), np.float64)
        for i, t in enumerate(trees):
            k = len(t["feature"])
            self._feat[i, :k] = t["feature"]
            self._thr[i, :k] = t["threshold"]
            self._mask[i, :k] = _false_masks(t)
            self._leaf[i, : len(t["leaf"])] = t["leaf"]
        # Nodes x trees: the per-tree AND then runs over the outer axis, on contiguous rows.
        self._feat = np.ascontiguousarray(self._feat.T)
        self._thr = np.ascontiguousarray(self._thr.T)
        self._mask = np.ascontiguousarray(self._mask.T)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TreeRanker:
        p = Path(path)
        try:
            if p.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"over {MAX_FILE_BYTES >> 20} MiB: no ranker is that large")
            doc = json.loads(p.read_bytes())
        except (OSError, ValueError, RecursionError) as e:
            raise CorruptFileError(f"cannot read the ranker {p}: {e}") from e
        return cls.from_json(doc, str(p))

    @classmethod
    def from_json(cls, doc: Any, name: str) -> TreeRanker:
        try:
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            trees = doc["trees"]
            if type(trees) is not list or not 0 < len(trees) <= MAX_TREES:
                raise ValueError(f"trees must be a list of 1 to {MAX_TREES}")
            for t in trees:
                _check_tree(t, len(FEATURES))
            if sum(len(t["feature"]) for t in trees) > MAX_NODES:
                raise ValueError(f"over {MAX_NODES} nodes in all")
            if sum(max(abs(v) for v in t["leaf"]) for t in trees) > MAX_LEAF:
                raise ValueError("leaf values too large for a trained model")
            names = doc["features"]
            if type(names) is not list or not all(type(f) is str for f in names):
                raise ValueError("features must be a list of names")
            if names != list(FEATURES):
                raise InvalidArgumentError(
                    f"the ranker {name} was trained on features {names}; this version "
                    f"computes {list(FEATURES)}: retrain it (bench/recall_quality.py --train)"
                )
            return cls(trees, name)
        except (KeyError, TypeError, ValueError, IndexError, RecursionError) as e:
            if isinstance(e, InvalidArgumentError):
                raise
            raise CorruptFileError(f"the ranker {name} is not valid: {e}") from e

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row of ``x`` (rows x FEATURES); higher ranks first. A missing value
        (NaN) counts as 0, as LightGBM's default treats it."""
        if x.shape[0] == 0:
            return np.zeros(0)
        x = np.nan_to_num(x, nan=0.0)
        # QuickScorer: a node whose test fails rules out the leaves of its left subtree; the
        # leaves left standing after every node of a tree is tested, the first (leftmost) is
        # where the row exits. Every node of every tree is tested at once.
        fails = x[:, self._feat] > self._thr  # rows x nodes x trees (trees innermost: fast)
        alive = np.bitwise_and.reduce(np.where(fails, self._mask, ALL_LEAVES), axis=1)
        lowest = alive & (~alive + np.uint64(1))  # the lowest set bit
        leaf = np.log2(lowest.astype(np.float64)).astype(np.int64)
        out: npt.NDArray[np.float64] = np.take_along_axis(self._leaf[None], leaf[..., None], 2)[
            ..., 0
        ].sum(axis=1)
        return out


def _false_masks(t: dict[str, Any]) -> list[int]:
    """Per node, the leaves still possible when its test fails: all but its left subtree's
    (leaves are numbered left to right, so a subtree's leaves are one range)."""
    k = len(t["feature"])
    lo, hi = [0] * k, [0] * k

    def span(c: int) -> tuple[int, int]:
        return (~c, ~c + 1) if c < 0 else (lo[c], hi[c])

    for node in reversed(_preorder(t)):  # children before parents
        lo[node] = span(t["left"][node])[0]
        hi[node] = span(t["right"][node])[1]
    masks = []
    for node in range(k):
        a, b = span(t["left"][node])
        left_bits = ((1 << (b - a)) - 1) << a
        masks.append(int(ALL_LEAVES) & ~left_bits)
    return masks


def _preorder(t: dict[str, Any]) -> list[int]:
    out, stack = [], [0] if t["feature"] else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(c for c in (t["right"][node], t["left"][node]) if c >= 0)
    return out


def _check_tree(t: Any, n_features: int) -> None:
    """Every field a list of the right type and length (JSON ``true`` is no index), children
    in range, numbers finite, the nodes one tree (see ``_leaves_in_order``)."""
    if type(t) is not dict or set(t) != set(FIELDS):
        raise ValueError(f"a tree must be an object of {', '.join(FIELDS)}")
    if any(type(t[f]) is not list for f in FIELDS):
        raise ValueError("a tree's fields must be lists")
    k = len(t["feature"])
    if k >= MAX_LEAVES:
        raise ValueError(f"a tree may have at most {MAX_LEAVES} leaves")
    if any(len(t[f]) != k for f in ("threshold", "left", "right")):
        raise ValueError("a tree's node lists differ in length")
    n_leaf = len(t["leaf"])
    if n_leaf != k + 1:
        raise ValueError("a binary tree has one leaf more than it has nodes")
    for f in t["feature"]:
        if type(f) is not int or not 0 <= f < n_features:
            raise ValueError(f"feature index {f!r} out of range")
    for c in (*t["left"], *t["right"]):
        if type(c) is not int or not (-n_leaf <= c < k) or c == 0:
            raise ValueError(f"child {c!r} out of range")  # 0 is the root: never a child
    for v in (*t["threshold"], *t["leaf"]):
        if type(v) not in (int, float) or not np.isfinite(v):
            raise ValueError("thresholds and leaves must be finite numbers")
    if _leaves_in_order(t) != list(range(n_leaf)):
        raise ValueError("a tree's nodes must form one tree with its leaves numbered left to right")


def _leaves_in_order(t: dict[str, Any]) -> list[int]:
    """The leaves met walking the tree left to right (scoring relies on them being 0, 1, ...);
    a node met twice (a cycle or a shared subtree) or never ends the walk with what is seen."""
    if not t["feature"]:
        return [0]
    seen: set[int] = set()
    out: list[int] = []
    stack = [0]
    while stack:
        c = stack.pop()
        if c < 0:
            out.append(~c)
            continue
        if c in seen:
            return []
        seen.add(c)
        stack.extend((t["right"][c], t["left"][c]))
    return out if len(seen) == len(t["feature"]) else []


def from_lightgbm(dump: dict[str, Any], features: list[str]) -> dict[str, Any]:
    """A LightGBM ``booster.dump_model()`` as this module's JSON (numerical splits only)."""
    trees = []
    if dump.get("linear_tree"):
        raise ValueError("linear trees are not supported")
    for info in dump["tree_info"]:
        t: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "left", "right", "leaf")}
        _flatten(info["tree_structure"], t)
        trees.append(t)
    return {"format": FORMAT, "features": list(features), "trees": trees}


def _flatten(n: dict[str, Any], t: dict[str, list[Any]]) -> int:
    """Appends LightGBM node ``n`` (and its subtree) to ``t``; returns its child index.
    Missing values are not modelled: the features are never NaN (``score`` maps NaN to 0,
    where LightGBM's default missing_type "None" puts it)."""
    if "split_feature" not in n:
        t["leaf"].append(float(n["leaf_value"]))
        return ~(len(t["leaf"]) - 1)
    if n.get("decision_type", "<=") != "<=" or n.get("missing_type", "None") not in ("None",):
        raise ValueError("only numerical <= splits without missing-value routing are supported")
    i = len(t["feature"])
    t["feature"].append(int(n["split_feature"]))
    t["threshold"].append(float(n["threshold"]))
    t["left"].append(0)
    t["right"].append(0)
    t["left"][i] = _flatten(n["left_child"], t)
    t["right"][i] = _flatten(n["right_child"], t)
    return i


_shipped: TreeRanker | None = None
_shipped_lock = threading.Lock()
OFF = "off"


def configured(choice: Ranker | str | os.PathLike[str] | None = None) -> Ranker | None:
    """The ranker a choice names: a ranker itself; ``"off"`` (None: the fused order); a path
    of a ranker JSON; or None: ``$LOCALMEM_RANKER`` if set (a path or "off"), else the one
    shipped with localmem."""
    global _shipped
    if choice is not None and not isinstance(choice, (str, os.PathLike)):
        return choice
    choice = choice if choice is not None else os.environ.get(RANKER_ENV) or None
    if choice is not None:
        return None if str(choice) == OFF else TreeRanker.load(choice)
    with _shipped_lock:
        if _shipped is None:
            doc = json.loads(resources.files("localmem.recall").joinpath(SHIPPED).read_bytes())
            _shipped = TreeRanker.from_json(doc, SHIPPED)
        return _shipped

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
DEFAULT = "default"  # Memory(ranker=DEFAULT): $LOCALMEM_RANKER, else the shipped one
MAX_TREES = 10_000
MAX_LEAVES = 64  # a tree's leaves are bits of one uint64 (QuickScorer)
ALL = np.uint64(2**64 - 1)


class Ranker(Protocol):
    """What the retriever needs of a re-ranker."""

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row of ``x`` (rows x FEATURES); higher ranks first."""
        ...


class TreeRanker:
    """An ensemble of binary regression trees; ``score(X)`` sums their leaves.

    Node arrays are padded into (trees x nodes) matrices so that every row walks every tree
    in one numpy step per level: a 50 x 300-tree batch costs ~1 ms, not 15,000 Python calls.
    Children are node indices; a negative child ``~j`` is leaf ``j``.
    """

    def __init__(self, trees: list[dict[str, Any]], name: str) -> None:
        """``trees`` as ``from_json`` checked them."""
        self.name = name
        n = len(trees)
        width = max(1, max(len(t["feature"]) for t in trees))
        self._feat = np.zeros((n, width), np.int64)
        self._thr = np.full((n, width), np.inf)  # padding: always true, eliminates nothing
        self._mask = np.full((n, width), ALL, np.uint64)
        self._leaf = np.zeros((n, MAX_LEAVES), np.float64)
        for i, t in enumerate(trees):
            k = len(t["feature"])
            self._feat[i, :k] = t["feature"]
            self._thr[i, :k] = t["threshold"]
            self._mask[i, :k] = _false_masks(t)
            self._leaf[i, : len(t["leaf"])] = t["leaf"]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TreeRanker:
        p = Path(path)
        try:
            doc = json.loads(p.read_bytes())
        except (OSError, ValueError) as e:
            raise CorruptFileError(f"cannot read the ranker {p}: {e}") from e
        return cls.from_json(doc, str(p))

    @classmethod
    def from_json(cls, doc: Any, name: str) -> TreeRanker:
        try:
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            trees = doc["trees"]
            if not isinstance(trees, list) or not 0 < len(trees) <= MAX_TREES:
                raise ValueError("trees must be a non-empty list")
            for t in trees:
                _check_tree(t, len(FEATURES))
            names = doc["features"]
            if not isinstance(names, list) or not all(isinstance(f, str) for f in names):
                raise ValueError("features must be a list of names")
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptFileError(f"the ranker {name} is not valid: {e}") from e
        if names != list(FEATURES):
            raise InvalidArgumentError(
                f"the ranker {name} was trained on features {names}; this version computes "
                f"{list(FEATURES)}: retrain it (bench/recall_quality.py --train)"
            )
        return cls(trees, name)

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row of ``x`` (rows x FEATURES); higher ranks first."""
        if x.shape[0] == 0:
            return np.zeros(0)
        # QuickScorer: a node whose test fails rules out the leaves of its left subtree; the
        # leaves left standing after every node of a tree is tested, the first (leftmost) is
        # where the row exits. Every node of every tree is tested at once.
        fails = x[:, self._feat] > self._thr  # rows x trees x nodes
        alive = np.bitwise_and.reduce(np.where(fails, self._mask, ALL), axis=2)
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
        masks.append(int(ALL) & ~left_bits)
    return masks


def _preorder(t: dict[str, Any]) -> list[int]:
    out, stack = [], [0] if t["feature"] else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(c for c in (t["right"][node], t["left"][node]) if c >= 0)
    return out


def _check_tree(t: Any, n_features: int) -> None:
    if not isinstance(t, dict):
        raise ValueError("a tree must be an object")
    k = len(t["feature"])
    if k >= MAX_LEAVES or any(len(t[f]) != k for f in ("threshold", "left", "right")):
        raise ValueError("a tree's node lists differ in length")
    n_leaf = len(t["leaf"])
    if n_leaf != k + 1:
        raise ValueError("a binary tree has one leaf more than it has nodes")
    for f in t["feature"]:
        if not isinstance(f, int) or not 0 <= f < n_features:
            raise ValueError(f"feature index {f!r} out of range")
    for c in (*t["left"], *t["right"]):
        if not isinstance(c, int) or not (-n_leaf <= c < k) or c == 0:
            raise ValueError(f"child {c!r} out of range")  # 0 is the root: never a child
    for v in (*t["threshold"], *t["leaf"]):
        if not isinstance(v, (int, float)) or not np.isfinite(v):
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
    for info in dump["tree_info"]:
        t: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "left", "right", "leaf")}
        _flatten(info["tree_structure"], t)
        trees.append(t)
    return {"format": FORMAT, "features": list(features), "trees": trees}


def _flatten(n: dict[str, Any], t: dict[str, list[Any]]) -> int:
    """Appends LightGBM node ``n`` (and its subtree) to ``t``; returns its child index."""
    if "split_feature" not in n:
        t["leaf"].append(float(n.get("leaf_value", 0.0)))
        return ~(len(t["leaf"]) - 1)
    if n.get("decision_type", "<=") != "<=":
        raise ValueError("only numerical <= splits are supported")
    i = len(t["feature"])
    t["feature"].append(int(n["split_feature"]))
    t["threshold"].append(float(n["threshold"]))
    t["left"].append(0)
    t["right"].append(0)
    t["left"][i] = _flatten(n["left_child"], t)
    t["right"][i] = _flatten(n["right_child"], t)
    return i


_shipped: TreeRanker | None = None


def configured(choice: str | os.PathLike[str] | None = None) -> TreeRanker | None:
    """The ranker to use: ``choice`` (a path, or "off"), else ``$LOCALMEM_RANKER``, else the
    one shipped with localmem."""
    global _shipped
    choice = choice if choice is not None else os.environ.get(RANKER_ENV) or None
    if choice is not None:
        return None if str(choice) == "off" else TreeRanker.load(choice)
    if _shipped is None:
        doc = json.loads(resources.files("localmem.recall").joinpath(SHIPPED).read_bytes())
        _shipped = TreeRanker.from_json(doc, SHIPPED)
    return _shipped

"""Would grouping the down columns by co-activation make neuron mode's reads large? Orders
each layer's neurons on the first half of a trace (which neurons a token used), then counts,
on the second half, the reads and the neurons read that the missing columns would take in
that order: one read per run of missing neurons whose gaps are at most `gap` neurons."""

from __future__ import annotations

import numpy as np

GAPS = (0, 15, 47)  # 47 neurons of 1 KiB: the 48 KiB the engine reads through


def orders(trace: list, n_ff: int, n_layer: int, split: int) -> dict[str, list[np.ndarray]]:
    """Per layer, the file order of the neurons (position -> neuron): as stored, most often
    used first, and spectral seriation of the co-activation graph (the Fiedler vector of its
    normalized Laplacian: neurons used by the same tokens end up side by side)."""
    out: dict[str, list[np.ndarray]] = {"as stored": [], "by frequency": [], "co-activation": []}
    for layer in range(n_layer):
        rows = [act for (lay, pos, act, _) in trace if lay == layer and pos < split]
        a = np.zeros((len(rows), n_ff), np.float32)
        for i, act in enumerate(rows):
            a[i, act] = 1
        c = a.T @ a
        d = c.sum(1) + 1e-6
        dm = 1 / np.sqrt(d)
        _, vec = np.linalg.eigh(dm[:, None] * (np.diag(d) - c) * dm[None, :])
        out["as stored"].append(np.arange(n_ff))
        out["by frequency"].append(np.argsort(-a.mean(0)))
        out["co-activation"].append(np.argsort(dm * vec[:, 1]))
    return out


def reads(trace: list, order: list[np.ndarray], n_ff: int, split: int, gap: int) -> tuple:
    """(reads per token-layer, share of the neurons read) for positions >= split."""
    rank = [np.argsort(o) for o in order]  # neuron -> position in the file
    n = n_reads = n_read = 0
    for lay, pos, _, missing in trace:
        if pos < split:
            continue
        n += 1
        if len(missing) == 0:
            continue
        p = np.sort(rank[lay][missing])
        cut = np.nonzero(np.diff(p) - 1 > gap)[0]
        first, last = np.concatenate([[0], cut + 1]), np.concatenate([cut, [len(p) - 1]])
        n_reads += len(first)
        n_read += int((p[last] - p[first] + 1).sum())
    return n_reads / max(n, 1), n_read / max(n, 1) / n_ff


def report(trace: list, n_ff: int, n_layer: int, split: int) -> dict[str, float]:
    """Prints the table; returns reads per token by order at gap 0."""
    print(f"\n  down columns grouped by co-activation? orders from positions < {split}, "
          f"reads of the missing columns at positions >= {split}:")  # fmt: skip
    print(f"    {'order':<16}" + "".join(f"{f'gap {g}: reads/tok, read':>28}" for g in GAPS))
    per_order = orders(trace, n_ff, n_layer, split)
    exact = {}
    for name, order in per_order.items():
        cells = []
        for g in GAPS:
            r, share = reads(trace, order, n_ff, split, g)
            cells.append(f"{r * n_layer:>18.0f}, {share:>7.3f}")
            if g == 0:
                exact[name] = r * n_layer
        print(f"    {name:<16}" + "".join(f"{c:>28}" for c in cells))
    return exact

"""The figure/measured/target table every ``bench/*.py --check`` ends with."""

from __future__ import annotations

from collections.abc import Sequence


def print_checks(figures: Sequence[tuple[str, float, str, float | None]], width: int) -> list[str]:
    """Prints each figure beside its target (``target=None``: reported only) and the verdict
    line; returns the names of the figures that missed."""
    print(f"\n{'figure':<{width}}{'measured':>10}  target")
    miss = []
    for name, v, op, target in figures:
        if target is None:
            print(f"{name:<{width}}{v:>10.3f}  (reported)")
            continue
        ok = v >= target if op == ">=" else v <= target
        print(f"{name:<{width}}{v:>10.3f}  {op} {target:<6} {'ok' if ok else 'MISS'}")
        if not ok:
            miss.append(name)
    print("PASS" if not miss else "FAIL: " + "; ".join(miss))
    return miss

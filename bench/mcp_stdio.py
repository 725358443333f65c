"""``localmem mcp`` as an editor drives it: the official SDK's stdio client against the server
in a subprocess, on a store of 10,000 memories (real embedder).

200 ``remember`` and 200 ``recall`` calls, timed at the client (median, p95), beside the same
recalls made in-process on the same store (what the protocol and the process hop add);
errors counted; then a malformed request (a line that is not JSON, and a tool call with an
argument of the wrong type) and a check that the server still answers.

    python bench/mcp_stdio.py --check      # ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from localmem import Memory

PEOPLE = ["Anna", "Bilal", "Chloe", "Dmitri", "Esra", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
THINGS = [
    ("likes", ["hiking", "jazz", "sushi", "chess", "gardening", "running", "opera", "baking"]),
    ("works on", ["the billing service", "the mobile app", "the data pipeline", "the website"]),
    ("moved to", ["Lisbon", "Oslo", "Kyoto", "Austin", "Nairobi", "Porto", "Quito", "Turin"]),
    ("is allergic to", ["peanuts", "cats", "pollen", "shellfish", "penicillin", "latex"]),
]


def corpus(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        p = r.choice(PEOPLE)
        verb, objs = r.choice(THINGS)
        out.append(f"{p} {verb} {r.choice(objs)} (note {i}, week {r.randrange(1, 53)}).")
    return out


def queries(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [
        f"What does {r.choice(PEOPLE)} {r.choice(['like', 'work on'])}? Where did they move?"
        for _ in range(n)
    ]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def drive(store: Path, n_calls: int) -> dict[str, object]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "localmem", "mcp", "--store", str(store)]
    )
    rem, rec, errors = [], [], 0
    async with Client(params) as c:
        await c.list_tools()
        await c.call_tool("recall", {"query": "warm-up"})
        for i, text in enumerate(corpus(n_calls, 99)):
            t = time.perf_counter()
            r = await c.call_tool("remember", {"text": f"new: {text}", "kind": "fact"})
            rem.append(time.perf_counter() - t)
            errors += r.is_error
            t = time.perf_counter()
            r = await c.call_tool("recall", {"query": queries(n_calls, i)[i], "k": 5})
            rec.append(time.perf_counter() - t)
            errors += r.is_error
    return {"remember": rem, "recall": rec, "errors": errors}


def malformed(store: Path) -> bool:
    p = subprocess.Popen(
        [sys.executable, "-m", "localmem", "mcp", "--store", str(store)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert p.stdin is not None and p.stdout is not None

    def send(obj: object) -> None:
        assert p.stdin is not None
        p.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        p.stdin.flush()

    def until(i: int) -> dict[str, object]:
        assert p.stdout is not None
        while True:
            msg = json.loads(p.stdout.readline())
            if msg.get("id") == i:
                return msg  # type: ignore[no-any-return]

    try:
        send("{not json")
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})  # fmt: skip
        until(1)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "recall", "arguments": {"query": 5, "k": "many"}}})  # fmt: skip
        until(2)
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
              "params": {"name": "recall", "arguments": {"query": "Anna", "k": 3}}})  # fmt: skip
        r = until(3)
        ok = isinstance(r.get("result"), dict) and not r["result"].get("isError")  # type: ignore[union-attr]
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    return bool(ok)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--memories", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--dir", default="/work/.benchtmp")
    args = ap.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mcp-") as d:
        store = Path(d) / "store"
        t = time.perf_counter()
        with Memory.open(store, sync="off") as mem:
            mem.remember_many([{"text": x} for x in corpus(args.memories, 1)])
            print(
                f"store: {args.memories:,} memories in {time.perf_counter() - t:.1f} s",
                file=sys.stderr,
            )
            local = []
            for q in queries(args.calls, 5):
                t = time.perf_counter()
                mem.recall(q, k=5)
                local.append(time.perf_counter() - t)
        res = asyncio.run(drive(store, args.calls))
        still = malformed(store)
    rem, rec = res["remember"], res["recall"]
    assert isinstance(rem, list) and isinstance(rec, list)
    ms = lambda xs, q: pct(xs, q) * 1000  # noqa: E731
    print(f"\n{'':26}{'median ms':>10}{'p95 ms':>9}")
    print(f"{'remember over MCP':26}{ms(rem, 0.5):>10.1f}{ms(rem, 0.95):>9.1f}")
    print(f"{'recall over MCP':26}{ms(rec, 0.5):>10.1f}{ms(rec, 0.95):>9.1f}")
    print(f"{'recall in-process':26}{ms(local, 0.5):>10.1f}{ms(local, 0.95):>9.1f}")
    print(
        f"MCP / in-process recall, median: {statistics.median(rec) / statistics.median(local):.2f}x"
    )
    checks = [
        (f"recall p95 over MCP, {args.memories:,} memories (ms)", ms(rec, 0.95), "<=", 50.0),
        (f"tool errors in {2 * args.calls} calls", float(res["errors"]), "<=", 0.0),  # type: ignore[arg-type]
        ("answers after a malformed request", float(still), ">=", 1.0),
    ]
    miss = print_checks(checks, 44)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The LoCoMo dev split as memories (``../shared/data/README.md``): every turn one memory
(text "speaker: text", event time = its session's date-time, session = "D3" for dia_id
"D3:14", key = dia_id), and each question's evidence as dia_ids."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev.json"
DATE_FMT = "%I:%M %p on %d %B, %Y"
CATEGORY = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def turns(sample: dict) -> list[dict]:
    """The conversation's turns as ``remember_many`` items, in order."""
    conv = sample["conversation"]
    out = []
    for name, val in conv.items():
        m = re.fullmatch(r"session_(\d+)", name)
        if not m or not isinstance(val, list):
            continue
        when = datetime.strptime(conv[f"{name}_date_time"], DATE_FMT)
        for t in val:
            text = f"{t['speaker']}: {t['text']}"
            out.append(
                {"text": text, "when": when, "session": f"D{m[1]}", "key": t["dia_id"],
                 "kind": "episodic", "source": "import"}
            )  # fmt: skip
    out.sort(key=lambda d: (int(d["session"][1:]), int(d["key"].split(":")[1])))
    return out


def evidence(qa: dict) -> set[str]:
    """The dia_ids a question's answer rests on (a few items carry malformed lists)."""
    ev: set[str] = set()
    for e in qa.get("evidence") or []:
        ev.update(re.findall(r"D\d+:\d+", str(e)))
    return ev

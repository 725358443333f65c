"""Getting memories in and out: a portable, checksummed JSONL export (and its import), and
imports of Markdown or plain-text notes and of a ChatGPT ``conversations.json`` export.

Export format, one JSON object a line (UTF-8):

    {"format": "localmem-export", "version": 1, "model": ..., "exported": ..., "count": N}
    {"id": ..., "text": ..., "meta": {...every metadata key: kind, times, tags, tier,
     stability, recalls, pinned, provenance...}}          (N lines)
    {"sha256": "<hex digest of every byte above this line>"}

Vectors are not exported (they belong to an embedding model; the import embeds again with
the store's own). Importing an export into an empty store gives back the same memories —
ids, text, times, tags and lifecycle state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from localmem import memmeta
from localmem.errors import CorruptFileError, InvalidArgumentError
from localmem.memory import Memory, Progress

log = logging.getLogger("localmem.portable")

FORMAT, VERSION = "localmem-export", 1


def export_jsonl(mem: Memory, out: IO[str]) -> int:
    """Writes every memory the store holds (forgotten ones too, until their purge)."""
    h = hashlib.sha256()

    def put(obj: dict[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        h.update(line.encode("utf-8"))
        out.write(line)

    ids = sorted(mem.store.ids())
    put({
        "format": FORMAT, "version": VERSION, "model": mem.embedder.model_id,
        "exported": datetime.now(timezone.utc).isoformat(), "count": len(ids),
    })  # fmt: skip
    n = 0
    for id in ids:
        try:
            it = mem.store.get(id)
        except CorruptFileError as e:  # intact but undecodable: the rest is still exported
            log.warning("export: memory %d left out, it cannot be read: %s", id, e)
            continue
        if it.meta.get("type") != "memory":
            continue
        meta = memmeta.unpack(it.meta, it.text)
        meta.pop("code", None)  # a cold memory's code is recomputed on import
        put({"id": id, "text": it.text, "meta": meta})
        n += 1
    out.write(json.dumps({"sha256": h.hexdigest()}) + "\n")
    return n


def read_jsonl(lines: Iterable[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the records of an export, after checking its checksum."""
    h = hashlib.sha256()
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    footer = None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise CorruptFileError(f"line {i} is not JSON ({e}): the export is damaged") from None
        if footer is not None:
            raise CorruptFileError(f"line {i} comes after the checksum line: damaged export")
        if isinstance(obj, dict) and set(obj) == {"sha256"}:
            footer = obj["sha256"]
            continue
        h.update((line if line.endswith("\n") else line + "\n").encode("utf-8"))
        if header is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise InvalidArgumentError(
                    'not a localmem export (its first line has no "format": '
                    f'"{FORMAT}"); to import notes use a .md or .txt file'
                )
            if obj.get("version") != VERSION:
                raise InvalidArgumentError(f"export version {obj.get('version')} is not {VERSION}")
            header = obj
            continue
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("id"), int)
            or not isinstance(obj.get("text"), str)
            or not isinstance(obj.get("meta"), dict)
        ):
            raise CorruptFileError(f"line {i} is not a memory record (id, text, meta)")
        records.append(obj)
    if header is None:
        raise CorruptFileError("the export is empty")
    if footer is None:
        raise CorruptFileError("the export has no checksum line: it was cut short")
    if footer != h.hexdigest():
        raise CorruptFileError("the export's checksum does not match: it was changed or damaged")
    if header.get("count") != len(records):
        raise CorruptFileError(
            f"the export says {header.get('count')} memories, holds {len(records)}"
        )
    return header, records


def import_jsonl(mem: Memory, lines: Iterable[str], progress: Progress | None = None) -> int:
    """Imports an export, keeping ids (so provenance links hold) and every memory's state;
    embeds the texts with this store's model. Refuses ids the store already has."""
    _, records = read_jsonl(lines)
    clash = [r["id"] for r in records if r["id"] in mem.store]
    if clash:
        raise InvalidArgumentError(
            f"this store already has {len(clash)} of the exported ids (first: {clash[0]}): "
            "import an export into an empty store"
        )
    model = mem.embedder.model_id
    items = []
    for r in records:
        meta = dict(r["meta"], type="memory", model=model)
        meta.pop("code", None)
        items.append((r["id"], r["text"], memmeta.pack(meta), None))
    for i in range(0, len(items), 1000):
        mem.store.put_many(items[i : i + 1000])
    mem._sync()
    mem._reembed(progress, [r["id"] for r in records])
    return len(records)


_HEADING = re.compile(r"^#{1,6}\s+(.*)$")


def note_chunks(text: str) -> Iterator[str]:
    """Markdown or plain text as memories: each heading's section, split into paragraphs
    (blank lines); a paragraph under a heading carries the heading ("Trip: we landed…")."""
    heading = ""
    para: list[str] = []

    def flush() -> Iterator[str]:
        body = " ".join(x.strip() for x in para).strip()
        para.clear()
        if body:
            yield f"{heading}: {body}" if heading else body

    for line in text.splitlines():
        m = _HEADING.match(line.strip())
        if m:
            yield from flush()
            heading = m.group(1).strip()
        elif not line.strip():
            yield from flush()
        else:
            para.append(line)
    yield from flush()


def import_notes(mem: Memory, path: Path, progress: Progress | None = None) -> int:
    text = path.read_text(encoding="utf-8")
    when = path.stat().st_mtime
    chunks = [c[:16_000] for c in note_chunks(text)]
    items = [
        {"text": c, "kind": "note", "source": "import", "when": when, "tags": [path.stem[:64]]}
        for c in chunks
    ]
    return len(mem.remember_many(items, progress=progress)) if items else 0


def chatgpt_messages(data: Any) -> Iterator[dict[str, Any]]:
    """The messages of a ChatGPT ``conversations.json``: one item per user or assistant
    message with text, with its time and its conversation as the session."""
    if not isinstance(data, list):
        raise InvalidArgumentError("a ChatGPT export is a JSON list of conversations")
    for conv in data:
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            continue
        session = str(conv.get("id") or conv.get("title") or "chatgpt")[:256]
        title = str(conv.get("title") or "")[:64]
        for node in conv["mapping"].values():
            msg = (node or {}).get("message") or {}
            role = (msg.get("author") or {}).get("role")
            parts = (msg.get("content") or {}).get("parts") or []
            text = "\n".join(p for p in parts if isinstance(p, str)).strip()
            if role not in ("user", "assistant") or not text:
                continue
            t = msg.get("create_time") or conv.get("create_time") or time.time()
            tags = [role, "chatgpt"] + ([title] if title.strip() else [])
            yield {
                "text": text[:16_000], "kind": "episodic", "source": "import",
                "session": session, "when": float(t), "tags": tags,
                "importance": 0.5 if role == "user" else 0.3,
            }  # fmt: skip


def import_chatgpt(mem: Memory, path: Path, progress: Progress | None = None) -> int:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CorruptFileError(f"{path} is not JSON: {e}") from None
    items = sorted(chatgpt_messages(data), key=lambda x: x["when"])
    return len(mem.remember_many(items, progress=progress)) if items else 0


def import_file(mem: Memory, path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """Imports ``path`` by what it holds: a localmem export, a ChatGPT export, or notes."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    if head.lstrip().startswith('{"format":"' + FORMAT) or f'"format": "{FORMAT}"' in head[:200]:
        with open(path, encoding="utf-8") as f:
            return "localmem export", import_jsonl(mem, f, progress)
    if head.lstrip().startswith("[") and '"mapping"' in head:
        return "ChatGPT export", import_chatgpt(mem, path, progress)
    return "notes", import_notes(mem, path, progress)

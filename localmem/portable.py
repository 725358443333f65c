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

An encrypted export (``export_encrypted``) is the same JSONL sealed in chunks with a key
derived from a passphrase (the format: ``localmem.store.sealedstream``). It is encrypted as it
is written, and read in memory: no byte of it is ever on disk in clear. Its import
authenticates the whole file before it parses a line, then checks it as a plain export's.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

from localmem import Memory, MemoryItem, Progress, SealedWriter, is_sealed, open_sealed
from localmem.errors import CorruptFileError, EncryptionKeyError, InvalidArgumentError

log = logging.getLogger("localmem.portable")

FORMAT, VERSION = "localmem-export", 1

# A passphrase, or a function that asks for it (called only for an encrypted file, once its
# header has been checked).
Passphrase: TypeAlias = str | Callable[[], str]


class TextSink(Protocol):
    """Where ``export_jsonl`` writes: a text file, or the encrypting writer's adapter."""

    def write(self, s: str, /) -> object: ...


def export_jsonl(mem: Memory, out: TextSink) -> int:
    """Writes every memory the store holds (forgotten ones too, until their purge)."""
    h = hashlib.sha256()

    def put(obj: dict[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        h.update(line.encode("utf-8"))
        out.write(line)

    count, records = mem.export_records()
    put({
        "format": FORMAT, "version": VERSION, "model": mem.embedder.model_id,
        "exported": datetime.now(timezone.utc).isoformat(), "count": count,
    })  # fmt: skip
    n = 0
    for id, text, meta in records:
        meta.pop("code", None)  # a cold memory's code is recomputed on import
        put({"id": id, "text": text, "meta": meta})
        n += 1
    out.write(json.dumps({"sha256": h.hexdigest()}) + "\n")
    return n


class _Encoded:
    """The text ``export_jsonl`` writes, as UTF-8 bytes into the encrypting writer."""

    def __init__(self, out: SealedWriter) -> None:
        self.out = out

    def write(self, s: str, /) -> int:
        return self.out.write(s.encode("utf-8"))


def export_encrypted(
    mem: Memory, out: IO[bytes], passphrase: str, *, params: dict[str, int] | None = None,
    chunk_size: int | None = None,
) -> int:  # fmt: skip
    """``export_jsonl`` encrypted with ``passphrase`` into the binary stream ``out``, chunk by
    chunk as it is written (nothing in clear reaches ``out``). ``params``: Argon2id's (default
    ``keyfile.ARGON2``; tests pass cheap ones). An export that fails half-way is left without
    its last chunk, so its import refuses it as cut short."""
    extra = {} if chunk_size is None else {"chunk_size": chunk_size}
    with SealedWriter(out, passphrase, params=params, **extra) as w:
        return export_jsonl(mem, _Encoded(w))


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
        except (ValueError, RecursionError) as e:
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


def import_jsonl(
    mem: Memory, lines: Iterable[str], progress: Progress | None = None, *, merge: bool = False
) -> int:
    """Imports an export, keeping ids (so provenance links hold) and every memory's state;
    embeds the texts with this store's model. The file is untrusted: every record passes the
    checks ``remember`` makes (``validate.check_record``), or nothing is imported. Refuses
    ids the store already has, and an id the file gives twice; ``merge``: new ids, and
    what the store already holds folded (``Memory.import_records``)."""
    _, records = read_jsonl(lines)
    return mem.import_records(
        ((r["id"], r["text"], r["meta"]) for r in records), progress, merge=merge
    )


_HEADING = re.compile(r"^#{1,6}\s+(.*)$")


def split_long(text: str, limit: int = Memory.MAX_TEXT_CHARS) -> list[str]:
    """``text`` as pieces of at most ``limit`` characters, cut after a sentence or at a
    space where there is one in the last fifth of a piece: a long paragraph becomes
    several memories, none of it dropped."""
    out = []
    while len(text) > limit:
        cut = max(text.rfind(". ", limit * 4 // 5, limit), text.rfind(" ", limit * 4 // 5, limit))
        cut = cut + 1 if cut > 0 else limit
        out.append(text[:cut].strip())
        text = text[cut:]
    out.append(text.strip())
    return [p for p in out if p]


def clean_label(s: str, limit: int = 64) -> str:
    """A tag or session taken from an untrusted file: control characters out, one line,
    at most ``limit`` characters."""
    return " ".join("".join(c if unicodedata.category(c) != "Cc" else " " for c in s).split())[
        :limit
    ]


def clean_text(s: str) -> str:
    """Text from an untrusted file as valid Unicode: a lone surrogate (a JSON ``\ud800``
    escape) becomes U+FFFD, NUL characters go."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace("\x00", "")


def note_chunks(text: str) -> Iterator[str]:
    """Markdown or plain text as memories: each heading's section, split into paragraphs
    (blank lines); a paragraph under a heading carries the heading ("Trip: we landed…"); a
    paragraph longer than a memory holds is cut into several."""
    heading = ""
    para: list[str] = []

    def flush() -> Iterator[str]:
        body = " ".join(x.strip() for x in para).strip()
        para.clear()
        if body:
            prefix = f"{heading[:200]}: " if heading else ""
            for piece in split_long(body, Memory.MAX_TEXT_CHARS - len(prefix)):
                yield prefix + piece

    for line in text.splitlines():
        m = _HEADING.match(line.strip())
        if m:
            yield from flush()
            heading = clean_label(m.group(1), 200)
        elif not line.strip():
            yield from flush()
        else:
            para.append(line)
    yield from flush()


def import_notes(mem: Memory, text: str, name: str, when: float,
                 progress: Progress | None = None) -> int:  # fmt: skip
    tag = _not_reply(clean_label(name) or "notes")
    items = [
        {"text": c, "kind": "note", "source": "import", "when": when, "tags": [tag]}
        for c in note_chunks(clean_text(text))
        if c.strip()
    ]
    return len(mem.remember_many(items, progress=progress)) if items else 0


def _not_reply(label: str) -> str:
    """A label from a file (its name, a conversation's title) as a tag that cannot mark a
    memory as the assistant's reply (``MemoryItem.REPLY_TAG``): "assistant.md" is the user's."""
    return f"{label} (imported)" if label == MemoryItem.REPLY_TAG else label


def _time(v: Any) -> float | None:
    """A unix time from an untrusted file, or None when it is not a plausible one."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    t = float(v)
    return t if math.isfinite(t) and 0 <= t <= 253402300799.0 else None


def chatgpt_messages(data: Any) -> Iterator[dict[str, Any]]:
    """The messages of a ChatGPT ``conversations.json``: one item per user or assistant
    message with text, with its time and its conversation as the session. Anything that is
    not of that shape is passed over."""
    if not isinstance(data, list):
        raise InvalidArgumentError("a ChatGPT export is a JSON list of conversations")
    now = time.time()
    for conv in data:
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            continue
        session = clean_label(str(conv.get("id") or conv.get("title") or ""), 256) or "chatgpt"
        title = clean_label(str(conv.get("title") or ""))
        conv_time = _time(conv.get("create_time"))
        for node in conv["mapping"].values():
            msg = node.get("message") if isinstance(node, dict) else None
            if not isinstance(msg, dict):
                continue
            author, content = msg.get("author"), msg.get("content")
            role = author.get("role") if isinstance(author, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            if role not in ("user", "assistant") or not isinstance(parts, list):
                continue
            text = clean_text("\n".join(p for p in parts if isinstance(p, str))).strip()
            if not text:
                continue
            t = _time(msg.get("create_time")) or conv_time or now
            # The role tags a reply as one (REPLY_TAG); a title must not pass for it.
            tags = [role, "chatgpt"] + ([_not_reply(title)] if title else [])
            for piece in split_long(text):
                yield {
                    "text": piece, "kind": "episodic", "source": "import",
                    "session": session, "when": t, "tags": tags,
                    "importance": 0.5 if role == "user" else 0.3,
                }  # fmt: skip


def import_chatgpt(mem: Memory, data: Any, progress: Progress | None = None) -> int:
    """The messages of a parsed ChatGPT ``conversations.json`` as episodic memories."""
    items = sorted(chatgpt_messages(data), key=lambda x: x["when"])
    return len(mem.remember_many(items, progress=progress)) if items else 0


def decode(data: bytes, name: str) -> str:
    """An import's text: UTF-8 (a BOM allowed), or an error that says what it is."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidArgumentError(f"{name} is UTF-16 text: save it as UTF-8 and import that")
    if data.startswith(b"PK\x03\x04"):
        raise InvalidArgumentError(
            f"{name} is a zip archive: unzip it first (a ChatGPT export holds conversations.json)"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(
            f"{name} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start:,}): "
            "localmem imports its own export (.jsonl), a ChatGPT conversations.json, or "
            "Markdown / text notes"
        ) from None
    if "\x00" in text:
        raise InvalidArgumentError(f"{name} holds NUL bytes: a binary file, not text")
    return text


def import_encrypted(
    mem: Memory, data: bytes, name: str, passphrase: Passphrase | None,
    progress: Progress | None = None, *, merge: bool = False,
) -> int:  # fmt: skip
    """Imports the encrypted export ``data``. Every chunk is authenticated before anything is
    imported (a file damaged at its end imports nothing, not its first part); what it holds
    is then checked as a plain export is. EncryptionKeyError for a wrong (or no)
    passphrase; CorruptFileError, naming ``name`` and the chunk, for a damaged or cut file."""

    def secret() -> str:
        if passphrase is None:
            raise EncryptionKeyError(f"{name} is an encrypted export: its passphrase is needed")
        return passphrase() if callable(passphrase) else passphrase

    text = decode(open_sealed(data, secret, name=name), name)
    if not text.startswith('{"format":"' + FORMAT):
        raise InvalidArgumentError(f"{name} is encrypted, but what it holds is not an export")
    return import_jsonl(mem, io.StringIO(text, newline=None), progress, merge=merge)


def import_data(
    mem: Memory, data: bytes, name: str, when: float | None = None,
    progress: Progress | None = None, *, passphrase: Passphrase | None = None,
    merge: bool = False,
) -> tuple[str, int]:  # fmt: skip
    """Imports ``data`` by what it holds: a localmem export (encrypted with ``passphrase``,
    or not; ``merge``: into a store with memories of its own), a ChatGPT export, or notes
    (tagged ``name``, dated ``when``). It is untrusted: anything it holds is checked as
    ``remember`` checks its input, and a file that is none of these is refused."""
    if is_sealed(data):  # before decode: it is binary
        n = import_encrypted(mem, data, name, passphrase, progress, merge=merge)
        return "encrypted localmem export", n
    text = decode(data, name)
    head = text[:4096]
    if head.lstrip().startswith('{"format":"' + FORMAT) or f'"format": "{FORMAT}"' in head[:200]:
        n = import_jsonl(mem, io.StringIO(text, newline=None), progress, merge=merge)
        return "localmem export", n
    if text.lstrip()[:1] in ("[", "{"):  # JSON, or notes that start with a bracket
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise CorruptFileError(f"{name} is JSON nested too deeply to be an export") from None
        except ValueError as e:
            if '"mapping"' in head:  # a ChatGPT export, damaged or cut
                raise CorruptFileError(f"{name} is not JSON ({e}): the export is damaged") from None
            if _json_lines(text):
                raise InvalidArgumentError(
                    f"{name} is JSON lines, but not a localmem export (whose first line is "
                    f'{{"format":"{FORMAT}", ...}}): nothing imported'
                ) from None
        else:
            if isinstance(parsed, list) and any(
                isinstance(c, dict) and "mapping" in c for c in parsed[:100]
            ):
                return "ChatGPT export", import_chatgpt(mem, parsed, progress)
            raise InvalidArgumentError(
                f"{name} is JSON, but neither a ChatGPT conversations.json (a list of "
                "conversations with a mapping) nor a localmem export (JSON lines)"
            )
        # Not JSON: Markdown may start with "[link](...)".
    return "notes", import_notes(mem, text, name, time.time() if when is None else when, progress)


def _json_lines(text: str) -> bool:
    """Whether the first line of ``text`` is a JSON object (JSON lines, not notes)."""
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def import_file(
    mem: Memory, path: Path, progress: Progress | None = None, *,
    passphrase: Passphrase | None = None, merge: bool = False,
) -> tuple[str, int]:  # fmt: skip
    """Imports the file at ``path`` (``import_data``; notes dated by its modification; an
    encrypted export opened with ``passphrase``; ``merge`` as there)."""
    try:
        data = path.read_bytes()
        when = path.stat().st_mtime
    except IsADirectoryError:
        raise InvalidArgumentError(f"{path} is a directory: import a file") from None
    except FileNotFoundError:
        raise InvalidArgumentError(f"{path} does not exist") from None
    except OSError as e:
        raise InvalidArgumentError(f"cannot read {path}: {e.strerror or e}") from None
    if is_sealed(data):  # its errors name the file, not a tag
        return "encrypted localmem export", import_encrypted(
            mem, data, str(path), passphrase, progress, merge=merge
        )
    return import_data(mem, data, path.stem, when, progress, merge=merge)

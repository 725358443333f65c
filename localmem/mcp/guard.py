"""The stdio transport of ``localmem mcp``: the SDK's, plus answers to malformed lines.

Why: the SDK's ``stdio_server`` (mcp 2.3) validates each line with ``jsonrpc_message_adapter``
and hands a failure to the session as an exception, which the dispatcher logs at debug level
and drops. Invalid JSON, ``42``, a batch array, ``"params": []`` or a ``\\ud800`` escape (which
the SDK's JSON parser rejects) got no answer at all: the client waited for its own timeout.
JSON-RPC 2.0 wants an error response, so :func:`triage` classifies each line first:

- invalid JSON: -32700 Parse error, id null;
- not an object: -32600 Invalid Request, id null. A batch array gets one such error for the
  whole array, as JSON-RPC answers an invalid batch and as the SDK's own streamable HTTP
  transport does: MCP dropped batches in 2025-06-18, so none of its elements is run;
- a request (``id`` and ``method``) with an invalid envelope: -32600 with its id (null when
  the id itself is invalid), or -32602 Invalid params when params is an array (MCP params
  are objects);
- a notification (``method``, no ``id``) or a response of the client's that is malformed:
  dropped with a warning on stderr; JSON-RPC never answers those.

A lone surrogate (``"\\ud800"``, half of a UTF-16 pair, often a truncated emoji) is replaced
by U+FFFD and the message is processed, just as the SDK already treats invalid UTF-8 bytes
(decoded with ``errors="replace"``); passed on as it is, it would fail the JSON encoding of any
reply that echoes it, which kills the stdio writer and with it the server.

Everything else is the SDK's stdio transport: its fd claim (fd 0 reads /dev/null and fd 1
writes to stderr while serving, so stray output from native code misses the wire), one
writer task, one JSON message per line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, BinaryIO, TextIO

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

log = logging.getLogger(__name__)

_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # cheap pre-check on the raw line
_SURROGATE = re.compile("[\ud800-\udfff]")  # left after json.loads only when unpaired


def triage(line: str) -> JSONRPCMessage | JSONRPCError | None:
    """One line read from the client: the message to pass to the server, the error to answer
    with instead, or None to drop it (a malformed notification or response)."""
    try:
        obj = json.loads(line, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return _error(None, PARSE_ERROR, "Parse error")
    if _ESCAPED_SURROGATE.search(line):
        text = json.dumps(obj, ensure_ascii=False)
        if _SURROGATE.search(text):
            obj = json.loads(_SURROGATE.sub("\ufffd", text))
    if isinstance(obj, list):
        return _error(None, INVALID_REQUEST, "Invalid Request: batches are not supported")
    if not isinstance(obj, dict):
        return _error(None, INVALID_REQUEST, "Invalid Request: not a JSON object")
    is_request = "method" in obj and "id" in obj
    try:
        msg = jsonrpc_message_adapter.validate_python(obj, by_name=False)
        # A request with a bad id also validates as a notification (extra keys are
        # ignored): it is owed an error, not silence.
        if isinstance(msg, JSONRPCRequest) or not is_request:
            return msg
    except ValidationError:
        pass
    rid = obj.get("id")
    if not (isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))):
        rid = None  # absent, or not an id (a float, null, an object...): answer with id null
    shaped = obj.get("jsonrpc") == "2.0" and isinstance(obj.get("method"), str)
    if "method" not in obj and ("result" in obj or "error" in obj):
        log.warning("dropped a malformed response: %.200s", line)
        return None
    if "id" not in obj and shaped:
        log.warning("dropped a malformed notification: %.200s", line)
        return None
    if rid is not None and shaped and isinstance(obj.get("params"), list):
        return _error(rid, INVALID_PARAMS, "Invalid params: params must be an object")
    return _error(rid, INVALID_REQUEST, "Invalid Request")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads accepts NaN and Infinity otherwise


def _error(rid: str | int | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=rid, error=ErrorData(code=code, message=message))


def dump(msg: JSONRPCMessage) -> bytes:
    """The wire form of msg. One that cannot be encoded (a lone surrogate from elsewhere than
    the client) becomes an internal error for its request, not a dead writer."""
    try:
        return msg.model_dump_json(by_alias=True, exclude_unset=True).encode()
    except PydanticSerializationError as e:
        log.warning("could not encode a %s: %s", type(msg).__name__, e)
        if isinstance(msg, JSONRPCResponse | JSONRPCError) and msg.id is not None:
            reply = _error(msg.id, INTERNAL_ERROR, "Internal error: the reply could not be encoded")
            return dump(reply)
        return b""  # a notification or a request of ours: nobody waits for an answer


def _claim(fd: int, stream: TextIO) -> tuple[BinaryIO, Callable[[], None] | None]:
    """The SDK's claim of fd (its private helper, so the wire is protected the same way);
    the std buffer in place, as mcp 1.x served it, should a later SDK move the helper."""
    from mcp.server import stdio as sdk

    claim = getattr(sdk, "_claim_fd", None)
    divert = getattr(sdk, "_open_stdin_diversion" if fd == 0 else "_open_stdout_diversion", None)
    if claim is None or divert is None:
        return stream.buffer, None
    return claim(fd, stream, "rb" if fd == 0 else "wb", divert)  # type: ignore[no-any-return]


@asynccontextmanager
async def stdio_server() -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Serves MCP over this process's stdin and stdout, like ``mcp.server.stdio.stdio_server``
    but answering malformed lines (see :func:`triage`)."""
    restore_in = restore_out = None
    try:
        stdin_buffer, restore_in = _claim(0, sys.stdin)
        stdout_buffer, restore_out = _claim(1, sys.stdout)
        stdin, stdout = anyio.wrap_file(stdin_buffer), anyio.wrap_file(stdout_buffer)
        to_server, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
        replies = write_stream.clone()  # the reader's errors share the one writer

        async def reader() -> None:
            try:
                async with to_server, replies:
                    async for raw in stdin:
                        line = raw.decode("utf-8", errors="replace")
                        if not line.strip():
                            continue  # no message: nothing to answer
                        msg = triage(line)
                        if isinstance(msg, JSONRPCError):
                            await replies.send(SessionMessage(msg))
                        elif msg is not None:
                            await to_server.send(SessionMessage(msg))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                await anyio.lowlevel.checkpoint()  # the server is gone

        async def writer() -> None:
            try:
                async with outgoing:
                    async for session_message in outgoing:
                        data = dump(session_message.message)
                        if data:
                            await stdout.write(data + b"\n")
                            await stdout.flush()
            except anyio.ClosedResourceError:
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            yield read_stream, write_stream
    finally:
        if restore_out is not None:
            restore_out()
        if restore_in is not None:
            restore_in()

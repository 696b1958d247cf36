"""The control protocol: newline-delimited JSON over a unix socket.

Request:  {"id": N, "cmd": "status", ...arguments}
Response: {"id": N, "ok": true, "result": ...}
          {"id": N, "ok": false, "error": "a clear message", ...details}
Events:   after {"cmd": "subscribe"} is answered, the connection carries one JSON object
          per line, each with "type" and "time" (see core.daemon.bus), until it closes.

`id` is echoed back (any JSON scalar; null when the request had none or could not be
parsed).  A line longer than MAX_LINE is answered with an error and the connection is
closed, since the rest of it cannot be told apart from the next request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.errors import UsageError

JsonDict = dict[str, Any]
MAX_LINE = 1 << 20  # bytes per request line; config-apply carries a whole config file

# command: (required string arguments, optional arguments with their types)
COMMANDS: dict[str, tuple[tuple[str, ...], dict[str, type]]] = {
    "ping": ((), {}),
    "status": ((), {"peer": str}),
    "up": (("peer",), {}),
    "down": (("peer",), {}),
    "rekey": (("peer",), {"ike": bool}),
    "reload": ((), {}),
    "config-get": ((), {}),
    "config-validate": (("text",), {}),
    "config-apply": (("text",), {}),
    "subscribe": ((), {}),
}


class ProtocolError(UsageError):
    """A request that cannot be carried out as sent; `request_id` is echoed back."""

    def __init__(self, message: str, request_id: object = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class CommandError(UsageError):
    """A well-formed command that failed (unknown peer, invalid config ...).

    `details` go into the error response next to "error", e.g. {"problems": [...]}."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Request:
    id: object
    cmd: str
    args: JsonDict = field(default_factory=dict)


def decode_request(line: bytes) -> Request:
    """Parse and check one request line; raises ProtocolError with a clear message."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ProtocolError(f"malformed JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError("a request must be a JSON object")
    request_id = value.get("id")
    if isinstance(request_id, dict | list):
        raise ProtocolError('"id" must be a number, a string or null')
    cmd = value.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError('missing "cmd" (a string)', request_id)
    spec = COMMANDS.get(cmd)
    if spec is None:
        known = ", ".join(sorted(COMMANDS))
        raise ProtocolError(f"unknown command {cmd!r} (known: {known})", request_id)
    required, optional = spec
    args = {key: item for key, item in value.items() if key not in ("id", "cmd")}
    for key in required:
        if not isinstance(args.get(key), str):
            raise ProtocolError(f'{cmd}: missing "{key}" (a string)', request_id)
    for key, item in args.items():
        if key in required:
            continue
        kind = optional.get(key)
        if kind is None:
            raise ProtocolError(f'{cmd}: unknown argument "{key}"', request_id)
        if not isinstance(item, kind):
            raise ProtocolError(f'{cmd}: "{key}" must be a {kind.__name__}', request_id)
    return Request(request_id, cmd, args)


def encode(value: JsonDict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def ok_response(request_id: object, result: object) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error_response(request_id: object, message: str, **details: Any) -> bytes:
    return encode({"id": request_id, "ok": False, "error": message, **details})


def encode_request(request_id: int, cmd: str, **args: Any) -> bytes:
    return encode({"id": request_id, "cmd": cmd, **args})


def decode_line(line: bytes) -> JsonDict:
    """A response or event line as the client reads it; raises ProtocolError."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ProtocolError(f"the daemon sent malformed JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError("the daemon sent something other than a JSON object")
    return value

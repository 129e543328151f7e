"""`settings.state-dir` from a config file's text: all the client needs of it.

With Python 3.11+ the text is read by `tomllib`. Before that there is no TOML reader in
the standard library, so a small scanner finds the key in the forms a config writes it
(`[settings]` then `state-dir = "..."`, `settings.state-dir = "..."`, or
`settings = { state-dir = "..." }`). A file it cannot read gives None, as a file the
supervisor's own TOML reader cannot parse does: the state directory is then the default.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import sys
from types import ModuleType

_tomllib: Optional[ModuleType]
if sys.version_info >= (3, 11):
    import tomllib as _tomllib
else:  # pragma: no cover - depends on the Python version
    _tomllib = None


def state_dir_setting(text: str) -> Optional[str]:
    """The `state-dir` of the `[settings]` table, if the text names one as a string."""
    if _tomllib is not None:
        return state_dir_tomllib(text)
    return state_dir_scan(text)


def state_dir_tomllib(text: str) -> Optional[str]:
    assert _tomllib is not None
    try:
        table: Any = _tomllib.loads(text)
    except ValueError:  # TOMLDecodeError is a ValueError
        return None
    settings = table.get("settings")
    if not isinstance(settings, dict):
        return None
    value = settings.get("state-dir")
    return value if isinstance(value, str) else None


_KEY = r'(?:state-dir|"state-dir"|\'state-dir\')'
_SETTINGS = r'(?:settings|"settings"|\'settings\')'
_STRING = r'("(?:[^"\\]|\\.)*"|\'[^\']*\')'


def _unquote(literal: str) -> Optional[str]:
    if literal.startswith("'"):
        return literal[1:-1]
    body = literal[1:-1]
    escapes = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1] if i + 1 < len(body) else ""
        if code in escapes:
            out.append(escapes[code])
            i += 2
        elif code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = body[i + 2 : i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                return None
            i += 2 + width
        else:
            return None
    return "".join(out)


def state_dir_scan(text: str) -> Optional[str]:
    """The scanner used before Python 3.11 (and tested on every version)."""
    table: Optional[str] = ""
    found: Optional[str] = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$", line)
        if header:
            table = re.sub(r"\s*\.\s*", ".", header.group(1))
            continue
        if line.startswith("[["):
            table = None
            continue
        if table in ("settings", '"settings"', "'settings'"):
            match = re.match(rf"^{_KEY}\s*=\s*{_STRING}\s*(?:#.*)?$", line)
        elif table == "":
            match = re.match(
                rf"^{_SETTINGS}\s*\.\s*{_KEY}\s*=\s*{_STRING}\s*(?:#.*)?$", line
            )
            if not match:
                inline = re.match(rf"^{_SETTINGS}\s*=\s*\{{(.*)\}}\s*(?:#.*)?$", line)
                if inline:
                    match = re.search(rf"(?:^|,)\s*{_KEY}\s*=\s*{_STRING}", inline.group(1))
        else:
            match = None
        if match:
            found = _unquote(match.group(1))
    return found

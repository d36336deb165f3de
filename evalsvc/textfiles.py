"""Reading the user's text files (suites, gates, trainer configs) with errors that name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import InputError


def read_text(path, what: str = "file", error: type[InputError] = InputError) -> str:
    """The file's UTF-8 text (a byte-order mark is dropped); `what` names the file's kind in the message."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def read_toml(path, what: str = "file", error: type[InputError] = InputError) -> tuple[dict, str]:
    """The parsed TOML of the file and its text."""
    text = read_text(path, what, error)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None

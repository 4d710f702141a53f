"""Reading secret files (peer secret, ZooKeeper credentials, TLS private key) in one careful place.

Why one place: every secret must be refused the same way when its file is readable by group or
others (another local user could read it and impersonate this role), and the message must name the
config key and the fix. The secret's content is never put in a message.
"""

from __future__ import annotations

import stat
from pathlib import Path

from controller.core.errors import ConfigError

#: A secret file larger than this is certainly not a password or a key: refuse it unread.
MAX_SECRET_BYTES = 64 * 1024


def check_private(path: str, key: str) -> Path:
    """The file at ``path`` if it is a regular file only its owner can read; else a one-line ConfigError."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError as exc:
        raise ConfigError([f"{key} {path}: {exc.strerror}; check the path"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError([f"{key} {path} is not a regular file; point it at the secret file"])
    if info.st_mode & 0o077:
        raise ConfigError([f"{key} {path} is readable by group/others; chmod 600 it"])
    if info.st_size > MAX_SECRET_BYTES:
        raise ConfigError([f"{key} {path} is larger than {MAX_SECRET_BYTES} bytes; point it at the secret file"])
    return file


def read_secret(path: str, key: str) -> bytes:
    """The stripped content of a private secret file; b"" when ``path`` is empty (not configured)."""
    if not path:
        return b""
    file = check_private(path, key)
    try:
        return file.read_bytes()[:MAX_SECRET_BYTES].strip()
    except OSError as exc:
        raise ConfigError([f"{key} {path}: {exc.strerror}; check the path"]) from None


def read_digest_credential(path: str, key: str) -> tuple[str, str]:
    """(user, password) from a file holding one line ``user:password`` (ZooKeeper digest auth)."""
    raw = read_secret(path, key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{key} {path} is not UTF-8 text; write one line user:password"]) from None
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "\n" in text or user != user.strip():
        raise ConfigError([f"{key} {path} does not hold one line user:password; write e.g. hook-h1:<random>"])
    return user, password

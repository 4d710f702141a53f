"""Reading a config file from disk for the CLI (the parser itself is pure: controller.core.config)."""

from __future__ import annotations

from pathlib import Path

from controller.core.config import parse_config
from controller.core.errors import ConfigError
from controller.core.model import Config


def load_config(path: str) -> Config:
    """The parsed config at ``path``; unreadable files become a one-line ``ConfigError`` too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["cannot read: no such file; check the path"], path) from None
    except IsADirectoryError:
        raise ConfigError(["cannot read: it is a directory; give the YAML file itself"], path) from None
    except UnicodeDecodeError:
        raise ConfigError(["cannot read: not UTF-8 text; save the file as UTF-8"], path) from None
    except OSError as err:
        raise ConfigError([f"cannot read: {err.strerror or err}; check the path and permissions"], path) from None
    return parse_config(text, path)

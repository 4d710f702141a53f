"""Strict host key checking against a known_hosts file that the project manages.

OpenSSH format (plain or hashed names, ``[addr]:port`` for ports other than 22), parsed with
paramiko's ``HostKeys``. The first-contact policy is explicit: ``refuse`` (default) fails a host
that has no entry, ``accept-new`` records its key once; a *changed* key is never accepted, it
fails the probe loudly. The file is re-read when it changes, so an operator who fixes an entry
does not restart the controller.
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Literal

import paramiko

from controller.probes.errors import HostKeyChanged, HostKeyUnknown, ProbeConfigError

FirstContact = Literal["refuse", "accept-new"]


def host_entry_name(address: str, port: int) -> str:
    """The name OpenSSH writes for a host: ``addr`` on port 22, ``[addr]:port`` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """Thread-safe view of one known_hosts file with a first-contact policy."""

    def __init__(self, path: str, first_contact: FirstContact = "refuse") -> None:
        if first_contact not in ("refuse", "accept-new"):
            raise ProbeConfigError(
                f"probe first_contact must be 'refuse' or 'accept-new', got {first_contact!r}: fix the config"
            )
        self.path = path
        self.first_contact: FirstContact = first_contact
        self._lock = threading.Lock()
        self._keys = paramiko.HostKeys()
        self._stamp: tuple[int, int] | None = None
        self._reload_if_changed()

    def key_types(self, address: str, port: int) -> list[str]:
        """Key types known for a host, to offer only those in the key exchange (as OpenSSH does)."""
        with self._lock:
            self._reload_if_changed()
            entry = self._keys.lookup(host_entry_name(address, port))
            return list(entry.keys()) if entry else []

    def check(self, address: str, port: int, key: paramiko.PKey) -> None:
        """Pass if ``key`` is the recorded key; record it on first contact with ``accept-new``."""
        name = host_entry_name(address, port)
        with self._lock:
            self._reload_if_changed()
            entry = self._keys.lookup(name)
            if entry:
                known = entry.get(key.get_name())
                if known is not None and known == key:
                    return
                raise HostKeyChanged(
                    f"host key changed for {address}:{port}: it offered {key.get_name()} "
                    f"{key.fingerprint}, known_hosts {self.path} has another key; "
                    "if the host was re-installed, replace its line"
                )
            if self.first_contact == "refuse":
                raise HostKeyUnknown(
                    f"unknown host key for {address}:{port} ({key.get_name()} {key.fingerprint}): "
                    f"add it to {self.path} or set first_contact: accept-new"
                )
            self._append(name, key)

    def add(self, address: str, port: int, key: paramiko.PKey) -> None:
        """Record a key explicitly (provisioning, tests); replaces nothing that exists."""
        with self._lock:
            self._reload_if_changed()
            name = host_entry_name(address, port)
            if not self._keys.lookup(name):
                self._append(name, key)

    def _append(self, name: str, key: paramiko.PKey) -> None:
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        try:
            directory = os.path.dirname(self.path) or "."
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other controllers may append to the same file
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ProbeConfigError(f"cannot record host key in {self.path}: {exc.strerror}") from exc
        self._keys.add(name, key.get_name(), key)
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        keys = paramiko.HostKeys()
        if stamp is not None:
            try:
                keys.load(self.path)
            except (OSError, paramiko.SSHException) as exc:
                raise ProbeConfigError(f"cannot read known_hosts {self.path}: {exc}") from exc
        self._keys = keys
        self._stamp = stamp

"""Launch Debian's own sshd for tests and the lab: on a 127.0.0.x port or inside a network namespace.

Each instance gets its own directory with a host key, a config and per-user authorized_keys files,
and runs in the foreground (``sshd -D -e``) so we hold its PID: pause (SIGSTOP, the "hung host"),
resume and kill act on that PID only, never on a process name.

Two lab accounts (created if missing, shell /bin/sh, password field ``*`` so key logins work with
``UsePAM no`` while no password can ever match):

* ``cif-probe``: the probe account. Its key line is restricted to
  ``command="true",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding``.
* ``cif-user``: a normal login user for lab clients (unrestricted key). Every sshd sets the
  environment variable ``CIF_NODE`` to its instance name, so ``echo $CIF_NODE`` tells a client
  which host answered through the VIP (all namespaces share one hostname).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from clusterlab.errors import LabError

SSHD = "/usr/sbin/sshd"
PROBE_USER = "cif-probe"
LOGIN_USER = "cif-user"
RESTRICTED = "command=\"true\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"


def ensure_user(name: str, shell: str = "/bin/sh") -> pwd.struct_passwd:
    """Create a system user with a home, ``shell`` and password ``*`` (keys only) unless it exists."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{name}", "--shell", shell, name],
             f"create user {name}")
        entry = pwd.getpwnam(name)
    if entry.pw_shell != shell:
        _run(["usermod", "--shell", shell, name], f"set the shell of {name}")
    _run(["usermod", "-p", "*", name], f"unlock {name} for key logins")  # '!' would refuse keys
    return pwd.getpwnam(name)


def generate_key(path: Path, kind: str = "ed25519") -> str:
    """Write a passphrase-less key pair at ``path`` (and ``path.pub``); return the public line."""
    if not path.exists():
        _run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], f"generate key {path}")
    return path.with_name(path.name + ".pub").read_text().strip()


class Sshd:
    """One sshd instance. ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        address: str,
        port: int,
        *,
        netns: str | None = None,
        probe_keys: Sequence[str] = (),
        user_keys: Sequence[str] = (),
        nproc: int | None = None,
        extra_config: str = "",
        nice: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.dir = workdir / name
        self.name = name
        self.address = address
        self.port = port
        self.netns = netns
        self.probe_keys = list(probe_keys)
        self.user_keys = list(user_keys)
        self.nproc = nproc
        self.extra_config = extra_config
        #: CPU priority of sshd and every connection it forks (negative = ahead of the load), as
        #: systemd's Nice= would set it on a real host (docs/probes.md, "Load")
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ files

    @property
    def host_key_path(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def host_public_key(self) -> str:
        """``type base64`` of the host key (generated on first use)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        kind, b64, *_ = generate_key(self.host_key_path).split()
        return f"{kind} {b64}"

    def known_hosts_line(self, address: str | None = None) -> str:
        """The known_hosts line a client needs for this sshd (``[addr]:port`` unless port 22)."""
        addr = address or self.address
        name = addr if self.port == 22 else f"[{addr}]:{self.port}"
        return f"{name} {self.host_public_key()}"

    def replace_host_key(self) -> None:
        """Give the server a new host key (restart it to take effect): the 'host key changed' case."""
        for path in (self.host_key_path, self.host_key_path.with_name(self.host_key_path.name + ".pub")):
            path.unlink(missing_ok=True)
        self.host_public_key()

    def _write_files(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.workdir, self.dir):  # the users read their authorized_keys as themselves
            os.chmod(d, 0o755)
        self.host_public_key()
        os.chmod(self.host_key_path, 0o600)
        (self.dir / f"authorized_keys.{PROBE_USER}").write_text("".join(f"{RESTRICTED} {k}\n" for k in self.probe_keys))
        (self.dir / f"authorized_keys.{LOGIN_USER}").write_text("".join(f"{k}\n" for k in self.user_keys))
        for f in self.dir.glob("authorized_keys.*"):
            os.chmod(f, 0o644)
        config = self.dir / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {self.host_key_path}\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys.%u\n"
            f"AllowUsers {PROBE_USER} {LOGIN_USER}\n"
            "PidFile none\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nMaxStartups 200\nMaxSessions 50\nLoginGraceTime 10\n"
            "PrintMotd no\nPrintLastLog no\nLogLevel INFO\n"
            f"SetEnv CIF_NODE={self.name}\n"
            f"{self.extra_config}\n"
        )
        return config

    # ------------------------------------------------------------------ process

    def argv(self, config: Path) -> list[str]:
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        if self.nproc is not None:
            # prlimit execs sshd: the limit is inherited by every session of every user (root is exempt).
            argv = ["prlimit", f"--nproc={self.nproc}:{self.nproc}", "--", *argv]
        if self.nice is not None:
            argv = ["nice", "-n", str(self.nice), *argv]  # nice execs sshd: the PID stays sshd's
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self, timeout_s: float = 10.0) -> Sshd:
        """Start sshd and wait until it listens; raises ``LabError`` with its log on failure."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        ensure_user(PROBE_USER)
        ensure_user(LOGIN_USER)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        config = self._write_files()
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise LabError(f"sshd config {config} is invalid: {check.stderr.strip()}")
        self.log_path.write_bytes(b"")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        try:
            self.proc = subprocess.Popen(self.argv(config), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        try:
            self._wait_listening(timeout_s)
        except LabError:
            self.kill()
            raise
        return self

    def _wait_listening(self, timeout_s: float) -> None:
        @retry(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.02), retry=retry_if_result(lambda ok: not ok))
        def listening() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise LabError(f"sshd {self.name} exited at start: {self._log_tail()}")
            return b"Server listening on" in self.log_path.read_bytes()

        try:
            listening()
        except RetryError as exc:
            raise LabError(f"sshd {self.name} did not listen within {timeout_s} s: {self._log_tail()}") from exc

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError(f"sshd {self.name} is not running: call start() first")
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP the listener: the kernel still completes handshakes, but no banner ever comes."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the listener (existing sessions live on in their own processes, as on a real host)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once continued
            self.proc.kill()
        self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the listener; it also ends its unauthenticated children."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self, timeout_s: float = 10.0) -> None:
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fill_process_table(user: str, count: int, seconds: float = 120.0) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` sleeping processes as ``user`` so its RLIMIT_NPROC count is used up.

    The caller ends them (``end_processes``); ``seconds`` bounds their life if it cannot.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen(["sleep", str(seconds)], user=user, stdin=subprocess.DEVNULL))
    except OSError as exc:
        end_processes(procs)
        raise LabError(f"cannot start sleeping processes as {user}: {exc}") from exc
    return procs


def end_processes(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Kill and reap processes this code started (by PID, never by name)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    deadline = time.monotonic() + 5
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))


def _run(argv: Sequence[str], what: str) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise LabError(f"cannot {what}: {argv[0]} is not installed (apt-get install openssh-server passwd)") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(f"cannot {what}: {exc.stderr.strip() or exc}") from exc

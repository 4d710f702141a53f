"""Prepare the guest image: Debian bookworm's 6.1 kernel package, its modules, kmod and an initramfs.

Why: this host's kernel has no CLUSTERIP; Debian's 6.1 package still ships ipt_CLUSTERIP.ko. The
package is fetched with `apt-get download` and unpacked with `dpkg -x` (never installed), so the
host stays untouched. Everything lands in a cache directory that survives between runs, keyed by
package name and version, so only the first run pays (about 10 s); later runs reuse it. A lock file
serialises concurrent preparers and a finished entry is renamed into place atomically, so an
interrupted run leaves no half-built entry behind.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clusterlab import cpio
from clusterlab.qemu_errors import PrepareError

DEFAULT_CACHE_DIR = Path("/var/cache/clusterip-failover/qemu")
CACHE_ENV = "CLUSTERIP_QEMU_CACHE"
PACKAGE_ENV = "CLUSTERIP_QEMU_KERNEL_PACKAGE"
GUEST_SCRIPTS = Path(__file__).resolve().parent.parent / "qemu"

# Modules stage 1 insmods (their dependencies are added from modules.dep, in load order).
BOOT_MODULES = ("virtio_pci", "virtio_rng", "9pnet_virtio", "9p", "overlay")
_KERNEL_PACKAGE_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64$")
_READY = "ready.json"
_LOCK_WAIT_S = 900.0
_STALE_INITRAMFS_S = 86400.0


@dataclass(frozen=True)
class GuestImage:
    """A prepared guest: everything run_in_guest needs to boot the 6.1 kernel."""

    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian version of that package, e.g. 6.1.192-2
    kernel_release: str  # `uname -r` inside the guest, e.g. 6.1.0-56-amd64
    kernel: Path  # uncompressed vmlinux (PVH entry), or the bzImage if extraction failed
    initramfs: Path  # gzip'd newc cpio with busybox, stage 1/2 scripts and the boot modules
    modules_dir: Path  # unpacked /lib/modules/<release>, bind-mounted there in the guest
    kmod: Path  # Debian's kmod binary; modprobe/depmod in the guest are symlinks to it


def prepare(cache_dir: Path | None = None) -> GuestImage:
    """Return a ready guest image, downloading and building what the cache lacks (idempotent)."""
    root = cache_dir or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepareError(f"cannot create qemu cache dir {root}: {exc.strerror}; "
                           f"set {CACHE_ENV} to a writable directory") from exc
    with _locked(root / ".lock"):
        entry = _ensure_entry(root)
        meta = json.loads((entry / _READY).read_text())
        busybox = _static_busybox()
        kmod = entry / "kmod" / "bin" / "kmod"
        modules_dir = entry / "root" / "lib" / "modules" / meta["kernel_release"]
        initramfs = _ensure_initramfs(entry, modules_dir, busybox)
        return GuestImage(
            package=meta["package"], version=meta["version"], kernel_release=meta["kernel_release"],
            kernel=entry / meta["kernel"], initramfs=initramfs, modules_dir=modules_dir, kmod=kmod,
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path; bounded wait so a stuck peer gives an error, not a hang."""
    with path.open("a") as handle:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PrepareError(f"qemu cache {path.parent} locked by another run for "
                                       f"{_LOCK_WAIT_S:.0f} s; wait for it or remove the stuck run") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path | None = None, fix: str = "") -> str:
    """Run a preparation tool; a failure becomes a one-line PrepareError naming the fix."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError as exc:
        raise PrepareError(f"{cmd[0]} not found; {fix or 'install it'}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PrepareError(f"{' '.join(cmd)} took over 600 s; {fix or 'check the machine'}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PrepareError(f"{' '.join(cmd)} failed: {last}; {fix or 'see its output'}")
    return proc.stdout


def _resolve_package() -> tuple[str, str]:
    """Name and candidate version of bookworm's newest linux-image-6.1.0-N-amd64 known to apt."""
    name = os.environ.get(PACKAGE_ENV, "")
    if not name:
        deps = _run(["apt-cache", "depends", "linux-image-amd64"], fix="apt-get install apt")
        found = re.findall(r"Depends: (\S+)", deps)
        name = next((d for d in found if _KERNEL_PACKAGE_RE.match(d)), "")
    if not name:
        names = _run(["apt-cache", "pkgnames", "linux-image-6.1.0-"]).split()
        abis = [(int(m.group(1)), n) for n in names if (m := _KERNEL_PACKAGE_RE.match(n))]
        if not abis:
            raise PrepareError("apt knows no linux-image-6.1.0-*-amd64 package; add Debian bookworm "
                               f"to the apt sources and run apt-get update, or set {PACKAGE_ENV}")
        name = max(abis)[1]
    policy = _run(["apt-cache", "policy", name])
    match = re.search(r"Candidate: (\S+)", policy)
    if not match or match.group(1) == "(none)":
        raise PrepareError(f"apt has no candidate for {name}; run apt-get update or set {PACKAGE_ENV}")
    return name, match.group(1)


def _newest_ready(root: Path) -> Path | None:
    ready = sorted(root.glob(f"*/{_READY}"), key=lambda p: p.stat().st_mtime)
    return ready[-1].parent if ready else None


def _ensure_entry(root: Path) -> Path:
    """The cache entry of the current kernel package, built if missing; offline, the newest one."""
    try:
        name, version = _resolve_package()
    except PrepareError:
        fallback = _newest_ready(root)
        if fallback is None:
            raise
        return fallback
    entry = root / re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{name}_{version}")
    if (entry / _READY).is_file():
        return entry
    staging = root / f".partial-{os.getpid()}-{entry.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _build_entry(staging, name, version)
        shutil.rmtree(entry, ignore_errors=True)
        staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _build_entry(staging: Path, name: str, version: str) -> None:
    fix = "run apt-get update and check that deb.debian.org (bookworm) is reachable"
    _run(["apt-get", "download", "-q", f"{name}={version}", "kmod"], cwd=staging, fix=fix)
    kernel_deb = next(staging.glob(f"{name}_*.deb"), None)
    kmod_deb = next(staging.glob("kmod_*.deb"), None)
    if kernel_deb is None or kmod_deb is None:
        raise PrepareError(f"apt-get download left no .deb for {name} or kmod in {staging}; {fix}")
    _run(["dpkg", "-x", str(kernel_deb), str(staging / "root")], fix="apt-get install dpkg")
    _run(["dpkg", "-x", str(kmod_deb), str(staging / "kmod")], fix="apt-get install dpkg")
    kernel_deb.unlink()
    kmod_deb.unlink()
    releases = [p.name for p in (staging / "root" / "lib" / "modules").iterdir()]
    if len(releases) != 1:
        raise PrepareError(f"{name} unpacked {len(releases)} module trees, expected 1; set {PACKAGE_ENV}")
    release = releases[0]
    depmod = staging / "kmod" / "sbin" / "depmod"
    _run([str(depmod), "-b", str(staging / "root"), release], fix="check the unpacked kmod package")
    bzimage = staging / "root" / "boot" / f"vmlinuz-{release}"
    vmlinux = extract_vmlinux(bzimage.read_bytes())
    if vmlinux is not None:
        (staging / "vmlinux").write_bytes(vmlinux)
    kernel = "vmlinux" if vmlinux is not None else str(bzimage.relative_to(staging))
    meta = {"package": name, "version": version, "kernel_release": release, "kernel": kernel}
    (staging / _READY).write_text(json.dumps(meta, indent=1) + "\n")


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage (xz or gzip payload), as scripts/extract-vmlinux finds it.

    Booting the ELF directly uses its PVH entry and saves ~3 s of in-guest decompression under TCG.
    """
    decoders = ((b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
                (b"\x1f\x8b\x08", lambda: zlib.decompressobj(31)))
    for magic, make in decoders:
        start = bzimage.find(magic)
        while start >= 0:
            try:
                data = make().decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error):
                data = b""
            if data.startswith(b"\x7fELF"):
                return data
            start = bzimage.find(magic, start + 1)
    return None


def _static_busybox() -> Path:
    """Host busybox, which must be static: it runs in the initramfs before any libc exists."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file() and not _has_interpreter(candidate.read_bytes()):
            return candidate
    raise PrepareError("no statically linked busybox found; apt-get install busybox-static")


def _has_interpreter(elf: bytes) -> bool:
    """True when an ELF64 file asks for a dynamic loader (a PT_INTERP program header)."""
    if elf[:5] != b"\x7fELF\x02":
        return True
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def boot_module_paths(modules_dir: Path, wanted: tuple[str, ...] = BOOT_MODULES) -> list[str]:
    """Relative .ko paths for `wanted` plus dependencies, each after the modules it needs."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for need in reversed(deps[path]):
            visit(need)
        order.append(path)

    builtin = (modules_dir / "modules.builtin").read_text()
    for name in wanted:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin.replace("-", "_"):
            raise PrepareError(f"module {name} is neither in modules.dep nor built in; "
                               "the kernel package layout changed, update BOOT_MODULES")
    return order


def _ensure_initramfs(entry: Path, modules_dir: Path, busybox: Path) -> Path:
    """Build (or reuse) the initramfs; its name hashes every input, so edits rebuild it."""
    modules = boot_module_paths(modules_dir)
    init, stage2 = (GUEST_SCRIPTS / "init").read_bytes(), (GUEST_SCRIPTS / "stage2").read_bytes()
    bb = busybox.read_bytes()
    digest = hashlib.sha256(b"\0".join([init, stage2, bb, *(m.encode() for m in modules)])).hexdigest()
    target = entry / f"initramfs-{digest[:16]}.cpio.gz"
    if target.is_file():
        return target
    names = [Path(m).name for m in modules]
    members = [
        cpio.directory("bin"), cpio.directory("dev"), cpio.chardev("dev/console", 5, 1),
        cpio.directory("modules"), cpio.regular("bin/busybox", bb, 0o755),
        cpio.regular("init", init, 0o755), cpio.regular("stage2", stage2, 0o644),
        cpio.regular("modules/order", ("\n".join(names) + "\n").encode()),
        *(cpio.regular(f"modules/{n}", (modules_dir / m).read_bytes()) for n, m in zip(names, modules, strict=True)),
    ]
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(cpio.archive(members), compresslevel=6, mtime=0))
    tmp.rename(target)
    # Drop stale variants only when old: another checkout may be about to boot with one.
    for old in entry.glob("initramfs-*.cpio.gz"):
        if old != target and time.time() - old.stat().st_mtime > _STALE_INITRAMFS_S:
            old.unlink(missing_ok=True)
    return target

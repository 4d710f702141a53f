"""The initramfs writer and the vmlinux extractor of the qemu lab harness (pure byte handling)."""

from __future__ import annotations

import gzip
import lzma
import stat

from clusterlab import cpio
from clusterlab.qemu_image import extract_vmlinux


def _parse(data: bytes) -> list[tuple[str, int, bytes, int, int]]:
    """A reader written from the newc spec, independent of the writer."""
    out, pos = [], 0
    while True:
        head = data[pos:pos + 110]
        assert head[:6] == b"070701"
        fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos:pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, fields[1], body, fields[9], fields[10]))


def test_archive_round_trips_every_kind_with_alignment() -> None:
    members = [cpio.directory("bin"), cpio.regular("bin/a", b"abcde", 0o755), cpio.symlink("sh", "bin/a"),
               cpio.chardev("dev/console", 5, 1), cpio.regular("/empty", b"")]
    parsed = _parse(cpio.archive(members))
    assert [p[0] for p in parsed] == ["bin", "bin/a", "sh", "dev/console", "empty"]
    assert stat.S_ISDIR(parsed[0][1]) and parsed[1][1] == stat.S_IFREG | 0o755 and parsed[1][2] == b"abcde"
    assert stat.S_ISLNK(parsed[2][1]) and parsed[2][2] == b"bin/a"
    assert stat.S_ISCHR(parsed[3][1]) and parsed[3][3:] == (5, 1)


def test_extract_vmlinux_finds_elf_after_false_magics_and_before_trailing_bytes() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    fake = b"\xfd7zXZ\x00not-really-xz"
    for payload in (lzma.compress(elf, format=lzma.FORMAT_XZ), gzip.compress(elf)):
        assert extract_vmlinux(b"MZ setup code" + fake + payload + b"\x00trailing size") == elf


def test_extract_vmlinux_returns_none_without_an_elf_payload() -> None:
    assert extract_vmlinux(b"MZ" + lzma.compress(b"not an elf", format=lzma.FORMAT_XZ)) is None

"""Exceptions of the qemu harness, kept apart so the image builder and the runner share them.

Every failure the harness can see (apt, dpkg, qemu, the guest) is mapped to one of these at the
boundary, with a one-line message that names the problem and the fix. They join the project's own
hierarchy so a caller that already handles ClusterIPFailoverError handles these too.
"""

from controller.core.errors import ClusterIPFailoverError


class QemuHarnessError(ClusterIPFailoverError):
    """Base of all harness errors: catch this to handle any of them."""


class GuestUnavailable(QemuHarnessError):
    """qemu cannot start at all on this machine (missing binary, no TCG, no 9p support).

    This is the only condition under which a qemu test may skip: anything later is a real failure.
    """


class PrepareError(QemuHarnessError):
    """The guest image (kernel package, modules, initramfs) could not be prepared."""


class GuestBootError(QemuHarnessError):
    """qemu started but the guest never reached the script, or powered off without a result.

    `console` holds the tail of the serial console so the cause is visible in the test report.
    """

    def __init__(self, message: str, console: str = "") -> None:
        super().__init__(message)
        self.console = console


class GuestTimeout(GuestBootError):
    """The guest did not power off within the timeout; the qemu process was killed."""

    def __init__(self, message: str, console: str = "", stdout: str = "", stderr: str = "") -> None:
        super().__init__(message, console)
        self.stdout = stdout
        self.stderr = stderr

"""What ``lumbar-edge serve`` is told: the listener's settings, checked before anything starts.

Plain data and checks only (no pynetdicom): :class:`ServeConfig` is built by the CLI from its
flags, or by a program embedding the listener, and :meth:`ServeConfig.checked` turns anything a
user can get wrong into one :class:`~lumbar_edge.errors.InputError`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

from ..errors import InputError

#: DICOM PS3.8: the largest PDU a peer may be told we receive is 2**32 - 1; 0 means "no limit",
#: which this listener never announces.
MAX_PDU_LIMIT = 2 ** 32 - 1
MIN_PDU = 4096


@dataclass(frozen=True)
class ForwardTarget:
    """The AE results are sent to by C-STORE (the PACS): ``HOST:PORT:AET``."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(value: str, what: str = "AE title") -> str:
    """``value`` if it is a valid DICOM AE title (1-16 characters of the default repertoire, no
    backslash or control characters, not only spaces); raises :class:`InputError` otherwise."""
    text = str(value)
    if not text.strip():
        raise InputError(f"the {what} is empty")
    if len(text) > 16:
        raise InputError(f"the {what} {text!r} is longer than 16 characters")
    if any(ch == "\\" or ord(ch) < 0x20 or ord(ch) > 0x7E for ch in text):
        raise InputError(f"the {what} {text!r} holds a backslash, control or non-ASCII character")
    return text.strip()


def parse_forward(text: str) -> ForwardTarget:
    """``HOST:PORT:AET`` (an IPv6 host in brackets: ``[::1]:104:PACS``) as a :class:`ForwardTarget`;
    raises :class:`InputError` for anything else."""
    raw = str(text)
    head, sep, aet = raw.rpartition(":")
    host, sep2, port_text = head.rpartition(":")
    if not sep or not sep2 or not host or not port_text:
        raise InputError(f"--forward {raw!r}: expected HOST:PORT:AET, e.g. pacs.local:104:PACS")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"--forward {raw!r}: the port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise InputError(f"--forward {raw!r}: the port must be 1..65535")
    return ForwardTarget(host=host, port=port, ae_title=check_ae_title(aet, "--forward AE title"))


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the DICOM listener.

    ``quiet_time``: seconds without a new instance (and with no open association that sent to the
    study) after which a study counts as complete. ``hold_timeout``: seconds a study touched by an
    aborted association waits for its sender to send again before it is set aside, unprocessed.
    ``max_spool_bytes``: instances waiting in the spool may take at most this much disk; beyond it
    (or when the disk has less than ``min_free_bytes`` free) instances are refused with status
    A700 (out of resources). ``retry_base``/``retry_max``: the forward back-off, doubling from
    ``retry_base`` seconds up to ``retry_max``, for as long as it takes.
    """

    model: Path
    spool: Path
    out: Path
    ae_title: str = "LUMBAR_EDGE"
    host: str = ""
    port: int = 11112
    forward: Optional[ForwardTarget] = None
    allow: Tuple[str, ...] = ()
    quiet_time: float = 10.0
    hold_timeout: float = 24 * 3600.0
    max_associations: int = 8
    max_pdu: int = 65536
    max_spool_bytes: int = 4 << 30
    min_free_bytes: int = 256 << 20
    network_timeout: float = 60.0
    retry_base: float = 2.0
    retry_max: float = 300.0
    keep_spool: bool = False
    backend: str = "auto"
    precision: Optional[str] = None
    #: An OpenVINO device (CPU, GPU, AUTO...); implies the openvino backend.
    device: Optional[str] = None
    overlays: bool = True

    def checked(self) -> "ServeConfig":
        """A copy with normalised values; raises :class:`InputError` for unusable settings."""
        ae = check_ae_title(self.ae_title)
        allow = tuple(check_ae_title(a, "--allow AE title") for a in self.allow)
        if not 0 <= int(self.port) <= 65535:
            raise InputError(f"--port {self.port}: must be 0..65535 (0 picks a free port)")
        if not Path(self.model).exists():
            raise InputError(f"no such model bundle: {self.model}")
        for name, value in (("--quiet-time", self.quiet_time), ("--hold-timeout", self.hold_timeout),
                            ("network timeout", self.network_timeout), ("retry base", self.retry_base),
                            ("retry max", self.retry_max)):
            if not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.retry_max < self.retry_base:
            raise InputError("the largest forward back-off is shorter than the first")
        if not 1 <= int(self.max_associations) <= 1000:
            raise InputError(f"--max-associations {self.max_associations}: must be 1..1000")
        if not MIN_PDU <= int(self.max_pdu) <= MAX_PDU_LIMIT:
            raise InputError(f"--max-pdu {self.max_pdu}: must be {MIN_PDU}..{MAX_PDU_LIMIT} bytes")
        if int(self.max_spool_bytes) <= 0:
            raise InputError("the spool limit must be positive")
        spool, out = Path(self.spool).absolute(), Path(self.out).absolute()
        if spool == out or _inside(spool, out) or _inside(out, spool):
            raise InputError(f"the spool {self.spool} and the output folder {self.out} must not contain each other")
        for label, folder in (("spool", spool), ("output", out)):
            if folder.exists() and not folder.is_dir():
                raise InputError(f"the {label} folder {folder} is a file")
        return replace(self, ae_title=ae, allow=allow, spool=spool, out=out, port=int(self.port),
                       max_associations=int(self.max_associations), max_pdu=int(self.max_pdu))


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False

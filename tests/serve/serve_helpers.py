"""Helpers of the listener tests: real DICOM peers (dcmtk's storescu/echoscu/storescp and
dsrdump/dciodvfy), synthetic studies with their own UIDs, and ``lumbar-edge serve`` as a
subprocess (a plain module: test folders are not packages here)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pydicom
from pydicom.uid import generate_uid

#: dcmtk's programs are called by absolute path: pynetdicom installs console scripts with the same
#: names (storescu, echoscu, storescp) that come first on PATH.
DCMTK_BIN = Path("/usr/bin")
PATIENT_NAME = "SECRETNAME^PATIENTA"
PATIENT_ID = "PID-7731-SECRET"


def dcmtk_missing_reason() -> Optional[str]:
    """None when dcmtk's storescu, echoscu, storescp and dsrdump are installed, else why not."""
    for tool in ("storescu", "echoscu", "storescp", "dsrdump"):
        if not (DCMTK_BIN / tool).exists():
            return f"dcmtk is not installed ({DCMTK_BIN / tool} missing; apt-get install dcmtk)"
    proc = subprocess.run([str(DCMTK_BIN / "storescu"), "--version"], capture_output=True, text=True, timeout=30)
    text = proc.stdout + proc.stderr
    if "dcmtk" not in text.lower() and "offis" not in text.lower():
        return f"{DCMTK_BIN / 'storescu'} is not dcmtk's storescu ({text.strip()[:80]!r})"
    return None


def tool(name: str) -> str:
    return str(DCMTK_BIN / name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def clone_study(src: Path, dest: Path, index: int) -> Dict[str, str]:
    """Copy the study folder ``src`` to ``dest`` with new Study/Series/SOP Instance UIDs and the
    sentinel patient name and ID; returns ``{"study_uid": ..., "sop_uids": [...]}``."""
    study_uid = generate_uid(entropy_srcs=["serve-test", str(dest), str(index)])
    series_map: Dict[str, str] = {}
    sops = []
    for path in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        series_uid = series_map.setdefault(ds.SeriesInstanceUID, generate_uid(
            entropy_srcs=[study_uid, ds.SeriesInstanceUID]))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_uid, str(path.relative_to(src))])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)
        sops.append(ds.SOPInstanceUID)
    return {"study_uid": study_uid, "sop_uids": sops, "folder": dest}


def storescu(port: int, folder: Path, calling: str = "SCANNER", called: str = "LUMBAR_EDGE",
             timeout: float = 120) -> subprocess.CompletedProcess:
    """Send every file under ``folder`` with dcmtk's storescu (one association)."""
    return subprocess.run([tool("storescu"), "-aet", calling, "-aec", called, "+sd", "+r", "-to", "20",
                           "127.0.0.1", str(port), str(folder)], capture_output=True, text=True, timeout=timeout)


def echoscu(port: int, calling: str = "SCANNER", called: str = "LUMBAR_EDGE") -> subprocess.CompletedProcess:
    return subprocess.run([tool("echoscu"), "-aet", calling, "-aec", called, "-to", "20", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)


class Pacs:
    """dcmtk's storescp as the PACS: every reception becomes its own file (``+uf``), so a
    duplicate delivery would show as a second file."""

    def __init__(self, folder: Path, port: Optional[int] = None, aet: str = "PACS"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aet = aet
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Pacs":
        self.proc = subprocess.Popen([tool("storescp"), "-aet", self.aet, "+uf", "-od", str(self.folder),
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: echoscu(self.port, called=self.aet).returncode == 0, 20, 0.2, "storescp to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}:{self.aet}"

    def received(self) -> List[pydicom.Dataset]:
        out = []
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                ds = pydicom.dcmread(path)
                ds.filename = str(path)
                out.append(ds)
        return out

    def files(self) -> List[Path]:
        return [p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")]


class ServeProcess:
    """``python -m lumbar_edge serve ...`` as a subprocess with its log collected."""

    def __init__(self, args: List[str], log_path: Path):
        self.args = args
        self.log_path = Path(log_path)
        self.proc: Optional[subprocess.Popen] = None
        self._lines: List[str] = []
        self._reader: Optional[threading.Thread] = None

    def start(self, port: int, timeout: float = 60) -> "ServeProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "lumbar_edge", "serve", *self.args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        wait_until(lambda: self.proc.poll() is not None or echoscu(port).returncode == 0, timeout, 0.2,
                   "lumbar-edge serve to answer C-ECHO")
        if self.proc.poll() is not None:
            self._reader.join(5)
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log}")
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            for line in proc.stdout:
                self._lines.append(line)
                fh.write(line)

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (a crash or power cut of the process)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(10)
        return code

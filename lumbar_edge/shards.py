"""Grading an archive with a job array: ``lumbar-edge infer ROOT --shard K/N --skip-done`` and
``lumbar-edge merge``.

- **Assignment.** Study ``S`` belongs to shard ``int(sha256(StudyInstanceUID)[:8]) mod N``: the
  same on every machine, Python version and run, whatever order the files are found in. ``K``
  counts from 0 (``0/3``, ``1/3``, ``2/3``), as Kubernetes' ``JOB_COMPLETION_INDEX`` and a Slurm
  array ``--array=0-{N-1}`` do.
- **Done.** A study is done when its JSON report is in the output folder, complete (25
  findings), for the same StudyInstanceUID and by the same grader (model, model file sha256,
  backend/precision). The report is written atomically and last of a study's outputs, so a
  study killed half-way has no report and is graded again; its leftover temporary files are
  removed first. A report by another grader is refused, never overwritten or mixed in.
- **Shard summary.** Each shard ends by writing ``OUT/shards/shard-K-of-N.json`` (atomically):
  its studies and their outcome, its grader, and a digest of every StudyInstanceUID it scanned
  (shards that saw different archives cannot be merged). While it runs it holds the lock
  ``OUT/shards/.shard-K-of-N.lock`` (``flock``: released by the kernel when the process dies), so
  a second copy of the same shard refuses to start instead of grading its studies twice.
- **Merge.** When a shard finds every shard summary of its split, it merges: one
  ``submission.csv`` (studies in StudyID order, as an unsharded run writes it) and one
  ``summary.json``; ``lumbar-edge merge OUT...`` does the same on demand, also over several
  output folders. The merge refuses missing shards, mixed splits, mixed graders, a study in two
  shards and shards of different archives.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError, LumbarEdgeError

SHARD_SCHEMA = "lumbar-edge/infer-shard"
SHARD_SCHEMA_VERSION = 1
SHARDS_DIR = "shards"
_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


class MergeError(LumbarEdgeError):
    """Shard results cannot be merged into one submission (missing, mixed or duplicated)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard {self.index}/{self.count} does not exist: K/N needs N >= 1 and "
                             f"0 <= K < N (K counts from 0)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """The file-name stem of this shard's summary and lock: ``shard-K-of-N``."""
        return f"shard-{self.index}-of-{self.count}"

    def contains(self, study_uid: str) -> bool:
        """Whether the study with ``study_uid`` belongs to this shard."""
        return shard_of(study_uid, self.count) == self.index


def shard_of(study_uid: str, count: int) -> int:
    """The 0-based shard of ``study_uid`` among ``count``: the first 8 bytes of its sha256, big
    endian, modulo ``count`` (stable across machines and runs, unlike Python's ``hash``)."""
    digest = hashlib.sha256(str(study_uid).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`; raises :class:`InputError` (one line) for anything else,
    for ``N < 1`` and for ``K`` outside ``0..N-1``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise InputError(f"--shard wants K/N (e.g. 0/3: the first of three shards, K counts from 0), got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise InputError(f"--shard {text}: N must be at least 1")
    if k >= n:
        raise InputError(f"--shard {text}: K counts from 0, so it must be below N={n} (0..{n - 1})")
    return Shard(k, n)


def archive_digest(study_uids: Iterable[str]) -> str:
    """sha256 over the sorted StudyInstanceUIDs of a scan: shards that scanned the same archive
    agree on it."""
    return hashlib.sha256("\n".join(sorted(set(study_uids))).encode("utf-8")).hexdigest()


def summary_path(out: Path, shard: Shard) -> Path:
    """Where ``shard``'s summary goes in the output folder ``out``: ``OUT/shards/shard-K-of-N.json``."""
    return Path(out) / SHARDS_DIR / f"{shard.name}.json"


class ShardLock:
    """An exclusive ``flock`` on ``OUT/shards/.shard-K-of-N.lock`` for the life of a shard run.

    The kernel drops it when the process ends, however it ends (a SIGKILLed shard leaves no stale
    lock). On network file systems it is as good as their lock support (NFSv4: yes; Lustre: with
    the ``flock`` mount option). Raises :class:`InputError` when another process holds it.
    """

    def __init__(self, out: Path, shard: Shard):
        self.path = Path(out) / SHARDS_DIR / f".{shard.name}.lock"
        self.shard = shard
        self._fd: Optional[int] = None

    def __enter__(self) -> "ShardLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"shard {self.shard} is already running into {self.path.parent.parent} ({holder}); "
                             f"one process per shard") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode("utf-8"), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def remove_partial_outputs(out: Path, study_id: str) -> List[Path]:
    """Delete the temporary files a killed run left for ``study_id`` (its report's and its
    overlays'; the atomic writers name them ``.{final name}.XXXX.tmp``). Only call it for studies
    this process is about to grade: another process's study keeps its files. Returns them."""
    from .report._io import safe_name

    sid = safe_name(study_id)
    out = Path(out)
    found = list(out.glob(f".{glob_escape(sid)}.json.*.tmp"))
    overlays = out / "overlays"
    if overlays.is_dir():
        for view in ("sagittal_t2", "sagittal_t1", "axial_t2", "series"):
            found.extend(overlays.glob(f".{glob_escape(sid)}_{view}*.png.*.tmp"))
    for path in found:
        path.unlink(missing_ok=True)
    return found


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_done_report(out: Path, study_id: str, study_uid: str, grader: Dict[str, str]):
    """``(path, result)`` of ``study_id``'s complete report in ``out`` by ``grader``, or
    ``(None, why)`` when there is none to trust (absent, unreadable, incomplete, or of another
    study with the same StudyID); the study is then graded again.

    Raises :class:`InputError` when the report was made by another grader: resuming into it would
    mix two models' grades in one archive.
    """
    from .labels import LABEL_COLUMNS
    from .report import ReportError, read_study_json, result_from_report, study_json_name

    path = Path(out) / study_json_name(study_id)
    if not path.is_file():
        return None, "no report"
    try:
        doc = read_study_json(path)
        result = result_from_report(doc)
    except (OSError, ReportError) as exc:
        return None, f"its report is unreadable ({exc})"
    if result.study_uid != study_uid:
        return None, f"its report is of another study ({result.study_uid})"
    if sorted(f.column for f in result.findings) != sorted(LABEL_COLUMNS):
        return None, f"its report has {len(result.findings)} findings, not the 25"
    theirs = report_grader(doc)
    if theirs != grader:
        raise InputError(f"{path} was graded by {describe_grader(theirs)}, this run grades with "
                         f"{describe_grader(grader)}: use another --out (or remove the old reports)")
    return path, result


def report_grader(doc: dict) -> Dict[str, str]:
    """The grader a report document records (see ``Pipeline.grader``)."""
    return {"model": str(doc.get("model", "")), "model_sha256": str(doc.get("model_sha256", "")),
            "backend": str(doc.get("backend", ""))}


def describe_grader(grader: Dict[str, str]) -> str:
    """A grader in words: ``NAME on BACKEND/PRECISION (model SHA256-PREFIX)``."""
    sha = grader.get("model_sha256") or "no sha256"
    return f"{grader.get('model') or '?'} on {grader.get('backend') or '?'} (model {sha[:12]})"


def write_shard_summary(out: Path, doc: dict, shard: Shard) -> Path:
    """Write a shard's summary document atomically to ``OUT/shards/shard-K-of-N.json``."""
    from .report import atomic_write_bytes

    body = dict(doc, schema=SHARD_SCHEMA, schema_version=SHARD_SCHEMA_VERSION, shard=shard.index,
                shards=shard.count)
    return atomic_write_bytes(summary_path(out, shard), (json.dumps(body, indent=2) + "\n").encode("utf-8"))


@dataclass
class MergeSummary:
    """What :func:`merge_shards` wrote."""

    csv_path: Path
    summary_path: Path
    shards: int
    succeeded: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    rows: int = 0

    def describe(self) -> str:
        text = (f"merged {self.shards} shards: {len(self.succeeded)} studies graded, {len(self.failed)} failed; "
                f"{self.csv_path} ({self.rows} rows), {self.summary_path}")
        for study, why in self.failed.items():
            text += f"\n  failed: {study}: {why}"
        return text


def _read_summaries(folder: Path) -> List[Tuple[Path, dict]]:
    """(path, document) of every shard summary in ``folder``; raises :class:`MergeError` for one
    that is unreadable, of another schema version or incomplete."""
    found = []
    shards_dir = Path(folder) / SHARDS_DIR
    for path in sorted(shards_dir.glob("shard-*-of-*.json")) if shards_dir.is_dir() else []:
        if _SHARD_FILE.match(path.name) is None:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MergeError(f"{path} is unreadable ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("schema") != SHARD_SCHEMA:
            raise MergeError(f"{path} is not a lumbar-edge shard summary")
        if doc.get("schema_version") != SHARD_SCHEMA_VERSION:
            raise MergeError(f"{path} has shard summary version {doc.get('schema_version')}, this lumbar-edge "
                             f"reads {SHARD_SCHEMA_VERSION}")
        try:
            Shard(int(doc["shard"]), int(doc["shards"]))
            ok = (isinstance(doc["grader"], dict) and isinstance(doc["archive"]["digest"], str)
                  and all(isinstance(s, dict) and {"study_id", "study_uid", "status"} <= set(s) for s in doc["studies"]))
        except (KeyError, TypeError, ValueError, InputError):
            ok = False
        if not ok:
            raise MergeError(f"{path} is an incomplete shard summary")
        found.append((path, doc))
    return found


def shard_set_complete(folder: Path, shard: Shard) -> bool:
    """Whether ``folder`` holds the summary of every shard of ``shard``'s split."""
    return all(summary_path(folder, Shard(k, shard.count)).is_file() for k in range(shard.count))


def merge_shards(folders: Sequence[Path], dest: Optional[Path] = None) -> MergeSummary:
    """Merge the shard runs in ``folders`` (one shared output folder, or one per shard) into
    ``dest`` (default: the only folder): ``submission.csv`` of every graded study, in StudyID order
    as an unsharded run writes it, read from the reports, and ``summary.json``. Both atomically.

    Raises :class:`MergeError` when a folder has no shard summaries, a shard is missing or
    appears twice, the summaries are of different splits, graders or archives, a study is in two
    shards, or a study's report is missing or is not the one its shard graded;
    :class:`InputError` when several folders are given without ``dest``.
    """
    from .report import ReportError, atomic_write_bytes, read_study_json, result_from_report, study_json_name
    from .report import write_submission_csv

    folders = [Path(f) for f in folders]
    if not folders:
        raise InputError("merge needs at least one results folder")
    if dest is None:
        if len(folders) > 1:
            raise InputError("merging several folders needs --out for the merged files")
        dest = folders[0]
    dest = Path(dest)
    by_index: Dict[int, Tuple[Path, Path, dict]] = {}
    counts, graders, archives = {}, {}, {}
    for folder in folders:
        summaries = _read_summaries(folder)
        if not summaries:
            raise MergeError(f"{folder} holds no shard summaries ({folder / SHARDS_DIR}/shard-K-of-N.json): "
                             f"was it written by `lumbar-edge infer --shard K/N`?")
        for path, doc in summaries:
            k, n = int(doc["shard"]), int(doc["shards"])
            counts.setdefault(n, []).append(f"{k}/{n}")
            if k in by_index and n == int(by_index[k][2]["shards"]):
                raise MergeError(f"shard {k}/{n} is in two places: {by_index[k][1]} and {path}")
            by_index[k] = (folder, path, doc)
            graders.setdefault(json.dumps(doc["grader"], sort_keys=True), []).append(f"{k}/{n}")
            archives.setdefault(doc["archive"]["digest"], []).append(f"{k}/{n}")
    if len(counts) > 1:
        raise MergeError("the shard summaries are of different splits (" +
                         "; ".join(f"{n} shards: {', '.join(v)}" for n, v in sorted(counts.items())) +
                         "): remove the stale ones")
    (count,) = counts
    missing = [f"{k}/{count}" for k in range(count) if k not in by_index]
    if missing:
        raise MergeError(f"shards {', '.join(missing)} have not finished (no summary in "
                         f"{', '.join(str(f / SHARDS_DIR) for f in folders)}); merge once every shard has")
    if len(graders) > 1:
        raise MergeError("the shards were graded by different models or backends: " + "; ".join(
            f"{describe_grader(json.loads(g))}: {', '.join(v)}" for g, v in graders.items()))
    if len(archives) > 1:
        raise MergeError("the shards scanned different archives (their study lists differ: the input changed "
                         "between their runs, or they were given different roots): " +
                         "; ".join(', '.join(v) for v in archives.values()))
    grader = json.loads(next(iter(graders)))
    owner: Dict[str, str] = {}  # StudyInstanceUID -> its shard
    id_owner: Dict[str, str] = {}  # StudyID (the report's file name) -> its shard
    entries = []
    for k in range(count):
        folder, path, doc = by_index[k]
        for study in doc["studies"]:
            sid, uid = str(study["study_id"]), str(study["study_uid"])
            if uid in owner or sid in id_owner:
                raise MergeError(f"study {sid} ({uid}) is in shard {owner.get(uid) or id_owner.get(sid)} and in "
                                 f"shard {k}/{count}")
            owner[uid] = id_owner[sid] = f"{k}/{count}"
            entries.append((sid, uid, study, folder, path))
    entries.sort(key=lambda e: e[0])  # the scan's order: an unsharded run's CSV order
    results, succeeded, failed, per_study = [], [], {}, {}
    for sid, uid, study, folder, path in entries:
        if study["status"] == "failed":
            failed[sid] = str(study.get("error", "failed"))
            per_study[sid] = {"ok": False, "error": failed[sid], "shard": owner[uid]}
            continue
        report = folder / study_json_name(sid)
        try:
            doc = read_study_json(report)
            result = result_from_report(doc)
        except (OSError, ReportError) as exc:
            raise MergeError(f"shard {owner[uid]} ({path}) graded study {sid}, but its report {report} is "
                             f"missing or unreadable ({exc})") from exc
        if result.study_uid != uid or report_grader(doc) != grader:
            raise MergeError(f"{report} is not the report shard {owner[uid]} made (study {result.study_uid}, "
                             f"{describe_grader(report_grader(doc))})")
        results.append(result)
        succeeded.append(sid)
        per_study[sid] = {"ok": True, "shard": owner[uid], "warnings": result.warnings, "timings_s": result.timings}
    csv_path = write_submission_csv(results, dest / "submission.csv")
    first = by_index[0][2]
    doc = {
        "input": first.get("input"), "model": grader["model"], "model_sha256": grader["model_sha256"],
        "backend": grader["backend"], "shards": count,
        "merged_from": [str(by_index[k][1]) for k in range(count)],
        "shard_seconds": [by_index[k][2].get("seconds") for k in range(count)],
        "succeeded": succeeded, "failed": failed, "studies": per_study,
        # Every shard scanned the whole root: its skipped files are the same in each.
        "skipped_files": first.get("skipped_files", []),
    }
    summary = atomic_write_bytes(dest / "summary.json", (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return MergeSummary(csv_path=csv_path, summary_path=summary, shards=count, succeeded=succeeded, failed=failed,
                        rows=25 * len(results))

"""Scan a folder: find files, read their headers in parallel, group, classify and sort.

One study folder or a root of many studies in any nesting. Only headers are read; pixels are
decoded later, slice by slice, on request. Bad input never stops the scan and nothing is ever
written under the scanned path: every file that cannot be used is skipped with a one-line warning
(logger ``lumbar_edge.dicom``) and listed with its reason in :attr:`ScanResult.skipped`.
"""
from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..progress import Progress
from .classify import ClassificationRule, SequenceInfo, classify_series
from .geometry import Plane, SliceGeometry, plane_of_normal, slice_spacing
from .headers import HeaderRecord, read_header
from .model import Instance, ScanResult, Series, SkippedFile, Study

log = logging.getLogger("lumbar_edge.dicom")

#: Below this many files a thread pool is used; above it, worker processes (header parsing is
#: pure-Python work that holds the GIL, so only processes use more than one core).
PROCESS_POOL_MIN_FILES = 400
_RSNA_FILE = re.compile(r"^\d+\.dcm$", re.IGNORECASE)


def scan_path(path: Union[str, os.PathLike], workers: Optional[int] = None,
              rules: Optional[Sequence[ClassificationRule]] = None, progress: bool = False,
              executor: str = "auto") -> ScanResult:
    """Scan ``path`` (a DICOM file, a study folder or a root of many) and return its studies.

    ``workers``: parallel header readers (default: the CPU count; 1 reads in this thread);
    ``rules``: classification rules replacing :data:`~lumbar_edge.dicom.DEFAULT_RULES`;
    ``progress``: show a progress bar while reading headers; ``executor``: ``"auto"`` (processes
    for large folders on several cores, else threads), ``"thread"`` or ``"process"``.

    Raises InputError when ``path`` does not exist or is not a file or folder, or ``workers``
    or ``executor`` is invalid. Unusable files are skipped and reported, never raised.
    """
    root = Path(path)
    if not os.path.lexists(root):
        raise InputError(f"no such file or folder: {root}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if executor not in ("auto", "thread", "process"):
        raise InputError(f"executor must be auto, thread or process, got {executor!r}")
    start = time.perf_counter()
    skipped: List[SkippedFile] = []
    if os.path.isdir(root):
        files = list(walk_files(root, skipped))
    elif os.path.isfile(root) or os.path.islink(root):
        files = [str(root)]
    else:
        raise InputError(f"not a file or folder: {root}")
    n_files = len(files)
    with warnings.catch_warnings():
        # pydicom warns (UserWarning) about each odd value it tolerates; a scan of a messy folder
        # would bury the skip warnings under them, and the values that matter are checked here.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        records = _read_headers(files, workers, executor, progress, skipped)
    studies = build_studies(records, rules, skipped)
    for item in skipped:
        log.warning("skipped %s: %s", item.path, item.reason)
    return ScanResult(root=root, studies=studies, skipped=skipped, n_files=n_files,
                      seconds=time.perf_counter() - start)


def walk_files(root: Path, skipped: List[SkippedFile]) -> Iterator[str]:
    """Every non-folder entry under ``root``, following symbolic links to folders but entering
    each real folder once (a link loop, or a second link to a folder, is skipped and recorded in
    ``skipped``); folders that cannot be listed are recorded too. Sorted for a stable order."""
    visited = set()

    def on_error(exc: OSError) -> None:
        skipped.append(SkippedFile(Path(exc.filename or root), f"cannot list folder: {exc.strerror or exc}",
                                   "unreadable"))

    try:
        st = os.stat(root)
        visited.add((st.st_dev, st.st_ino))
    except OSError as exc:
        raise InputError(f"cannot read {root}: {exc.strerror or exc}") from None
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError as exc:
                skipped.append(SkippedFile(Path(full), f"cannot open folder: {exc.strerror or exc}", "unreadable"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                what = "symbolic link loop" if os.path.islink(full) else "folder reached twice"
                skipped.append(SkippedFile(Path(full), f"{what}: this folder was already scanned", "link_loop"))
                continue
            visited.add(key)
            keep.append(name)
        dirnames[:] = keep  # os.walk descends only into what is left here
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def _read_headers(files: List[str], workers: Optional[int], executor: str, progress: bool,
                  skipped: List[SkippedFile]) -> List[HeaderRecord]:
    cpus = os.cpu_count() or 1
    n_workers = min(workers or cpus, max(1, len(files)))
    use_processes = executor == "process" or (
        executor == "auto" and n_workers > 1 and cpus > 1 and len(files) >= PROCESS_POOL_MIN_FILES)
    records: List[HeaderRecord] = []
    with Progress(len(files), "reading DICOM headers", enabled=progress) as bar:
        for path, outcome in _map(files, n_workers, use_processes):
            bar.update()
            if isinstance(outcome, HeaderRecord):
                records.append(outcome)
            else:
                category, reason = outcome
                skipped.append(SkippedFile(Path(path), reason, category))
    return records


def _map(files: List[str], n_workers: int, use_processes: bool) -> Iterator[Tuple[str, object]]:
    if n_workers <= 1 or len(files) <= 1:
        for path in files:
            yield path, read_header(path)
        return
    pool: Executor
    if use_processes:
        import multiprocessing

        # fork starts workers in milliseconds with pydicom already imported; elsewhere (macOS,
        # Windows) the platform default is used.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(n_workers, mp_context=ctx)
        chunk = max(8, len(files) // (n_workers * 8))
    else:
        pool = ThreadPoolExecutor(n_workers, thread_name_prefix="dicom-header")
        chunk = 1
    with pool:
        yield from zip(files, pool.map(read_header, files, chunksize=chunk))


def build_studies(records: Iterable[HeaderRecord], rules: Optional[Sequence[ClassificationRule]],
                  skipped: List[SkippedFile]) -> List[Study]:
    """Group header records into studies and series: drop duplicate SOP instances and slices of
    a minority size (recorded in ``skipped``), classify each series and sort its slices."""
    by_sop: Dict[str, HeaderRecord] = {}
    for rec in sorted(records, key=lambda r: r.path):
        first = by_sop.get(rec.sop_uid)
        if first is not None:
            skipped.append(SkippedFile(Path(rec.path), f"duplicate SOPInstanceUID of {first.path}", "duplicate"))
            continue
        by_sop[rec.sop_uid] = rec
    grouped: Dict[str, Dict[str, List[HeaderRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in by_sop.values():
        grouped[rec.study_uid][rec.series_uid].append(rec)
    studies = []
    for study_uid, series_map in grouped.items():
        series_records = {uid: _keep_majority_size(recs, skipped) for uid, recs in series_map.items()}
        study_id, series_ids = _rsna_ids(study_uid, series_records)
        series = [_build_series(recs, series_ids[uid], rules) for uid, recs in series_records.items()]
        series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_id))
        first = next(iter(series_records.values()))[0]
        studies.append(Study(study_uid=study_uid, study_id=study_id, series=series, patient_id=first.patient_id,
                             study_date=first.study_date, study_description=first.study_description))
    studies.sort(key=lambda s: s.study_id)
    return studies


def _keep_majority_size(recs: List[HeaderRecord], skipped: List[SkippedFile]) -> List[HeaderRecord]:
    sizes = Counter((r.rows, r.columns) for r in recs)
    if len(sizes) == 1:
        return recs
    # The most frequent size wins; on a tie the larger image (more likely the diagnostic one).
    (rows, cols), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1]))
    keep = []
    for r in recs:
        if (r.rows, r.columns) == (rows, cols):
            keep.append(r)
        else:
            skipped.append(SkippedFile(Path(r.path), f"image size {r.rows}x{r.columns} differs from the "
                                       f"{rows}x{cols} of the rest of its series", "size_mismatch"))
    return keep


def _rsna_ids(study_uid: str, series_records: Dict[str, List[HeaderRecord]]) -> Tuple[str, Dict[str, str]]:
    """The RSNA layout ``{study_id}/{series_id}/{n}.dcm``: when every file of the study is named
    ``<number>.dcm``, each series lives alone in one folder and all those folders share one
    parent, the folder names are the ids; otherwise the UIDs are."""
    uids = {uid: uid for uid in series_records}
    parents: Dict[str, str] = {}
    grandparents = set()
    for uid, recs in series_records.items():
        dirs = set()
        for r in recs:
            absolute = os.path.abspath(r.path)  # abspath, not resolve: a symlinked folder keeps its name
            if not _RSNA_FILE.match(os.path.basename(absolute)):
                return study_uid, uids
            dirs.add(os.path.dirname(absolute))
        if len(dirs) != 1:
            return study_uid, uids
        parents[uid] = dirs.pop()
        grandparents.add(os.path.dirname(parents[uid]))
    if len(grandparents) != 1 or len(set(parents.values())) != len(parents):
        return study_uid, uids
    study_dir = grandparents.pop()
    if not os.path.basename(study_dir):
        return study_uid, uids
    return os.path.basename(study_dir), {uid: os.path.basename(d) for uid, d in parents.items()}


def _geometry(rec: HeaderRecord) -> Optional[SliceGeometry]:
    if rec.position is None or rec.orientation is None:
        return None
    try:
        # Without PixelSpacing, 1 mm per pixel keeps pixel<->patient usable (positions stay right).
        return SliceGeometry.from_tags(rec.position, rec.orientation, rec.pixel_spacing or (1.0, 1.0))
    except ValueError:
        return None


def _build_series(recs: List[HeaderRecord], series_id: str, rules: Optional[Sequence[ClassificationRule]]) -> Series:
    instances = []
    for r in recs:
        instances.append(Instance(
            path=Path(r.path), sop_uid=r.sop_uid,
            instance_number=r.instance_number if r.instance_number is not None else 0,
            rows=r.rows, columns=r.columns, geometry=_geometry(r), photometric=r.photometric,
            rescale_slope=r.rescale_slope, rescale_intercept=r.rescale_intercept,
            transfer_syntax_uid=r.transfer_syntax_uid, bits_stored=r.bits_stored,
            pixel_representation=r.pixel_representation))
    geoms = [inst.geometry for inst in instances]
    normal = None
    if all(g is not None for g in geoms):
        ref = geoms[0]
        if all(ref.is_parallel(g, tolerance_deg=5.0) for g in geoms):
            normal = ref.normal
            plane = plane_of_normal(normal)
        else:
            plane = Plane.MIXED
    else:
        plane = Plane.UNKNOWN
    if normal is not None:
        for inst in instances:
            inst.position = inst.geometry.position_along(normal)
        instances.sort(key=lambda i: (i.position, i.instance_number, str(i.path)))
        spacing = slice_spacing([inst.position for inst in instances])
    else:
        instances.sort(key=lambda i: (i.instance_number, str(i.path)))
        spacing = None
    first = recs[0]
    if spacing is None:
        spacing = first.spacing_between_slices or first.slice_thickness
    seq = _series_sequence(recs)
    result = classify_series(plane, seq, rules)
    pixel_spacing = geoms[0].pixel_spacing if geoms[0] is not None and first.pixel_spacing else first.pixel_spacing
    return Series(series_uid=first.series_uid, series_id=series_id, series_number=first.series_number,
                  description=first.series_description, kind=result.kind, plane=plane, weighting=result.weighting,
                  instances=instances, spacing=spacing, rows=first.rows, columns=first.columns,
                  pixel_spacing=tuple(pixel_spacing) if pixel_spacing else None,
                  normal=None if normal is None else np.array(normal), modality=first.modality,
                  classified_by=result.basis, rule=result.rule, sequence=seq.to_dict())


def _series_sequence(recs: List[HeaderRecord]) -> SequenceInfo:
    """The series' sequence values: for each tag the most common value over its instances
    (a stray instance does not change the classification)."""
    def mode(values):
        present = [v for v in values if v not in (None, "", ())]
        return Counter(present).most_common(1)[0][0] if present else None

    def pick(attr):
        return mode(getattr(r, attr) for r in recs)

    return SequenceInfo(
        repetition_time=pick("repetition_time"), echo_time=pick("echo_time"), inversion_time=pick("inversion_time"),
        scanning_sequence=pick("scanning_sequence") or (), sequence_variant=pick("sequence_variant") or (),
        scan_options=pick("scan_options") or (), sequence_name=pick("sequence_name") or "",
        image_type=pick("image_type") or (), description=pick("series_description") or "", n_slices=len(recs))

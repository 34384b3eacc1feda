"""Scan a folder: find files, read their headers in parallel, group, classify and sort.

One study folder or a root of many studies in any nesting. Only headers are read; pixels are
decoded later, slice by slice, on request. Bad input never stops the scan and nothing is ever
written under the scanned path: every file that cannot be used is skipped with a one-line warning
(logger ``lumbar_edge.dicom``) and listed with its reason in :attr:`ScanResult.skipped`.
"""
from __future__ import annotations

import logging
import math
import os
import operator
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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

#: From this many files on, "auto" reads headers in worker processes (header parsing is pure
#: Python and holds the GIL, so only processes use more than one core); below, serially.
PROCESS_POOL_MIN_FILES = 256


def scan_path(path: Union[str, os.PathLike], workers: Optional[int] = None,
              rules: Optional[Sequence[ClassificationRule]] = None, progress: bool = False,
              executor: str = "auto") -> ScanResult:
    """Scan ``path`` (a DICOM file, a study folder or a root of many) and return its studies.

    ``workers``: parallel header readers (default: the CPU count; 1 reads in this thread);
    ``rules``: classification rules replacing :data:`~lumbar_edge.dicom.DEFAULT_RULES`;
    ``progress``: show a progress bar while reading headers; ``executor``: ``"auto"`` (worker
    processes for large folders on several cores, else this thread), ``"process"``, ``"thread"``
    (a thread pool: can help on slow network storage) or ``"serial"``.

    Raises InputError when ``path`` does not exist or is not a file or folder, or ``workers``
    or ``executor`` is invalid. Unusable files are skipped and reported, never raised.
    """
    root = Path(path)
    if not os.path.lexists(root):
        raise InputError(f"no such file or folder: {root}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if executor not in ("auto", "serial", "thread", "process"):
        raise InputError(f"executor must be auto, serial, thread or process, got {executor!r}")
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
    skipped.sort(key=lambda s: str(s.path))  # the same report whatever order workers finished in
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
    mode, n_workers = _plan(len(files), workers, executor)
    records: List[HeaderRecord] = []
    with Progress(len(files), "reading DICOM headers", enabled=progress) as bar:
        for path, outcome in _map(files, mode, n_workers):
            bar.update()
            if isinstance(outcome, HeaderRecord):
                records.append(outcome)
            elif isinstance(outcome, list):  # one record per frame of a multi-frame file
                records.extend(outcome)
            else:
                category, reason = outcome
                skipped.append(SkippedFile(Path(path), reason, category))
    return records


def _plan(n_files: int, workers: Optional[int], executor: str) -> Tuple[str, int]:
    """How to read ``n_files`` headers: ("serial" | "thread" | "process", workers).

    Measured on 2 cores, warm page cache, 1400 files of ~200 KB (the synthetic benchmark):
    one thread reads ~7,500 headers/s; a thread pool is slower (the parsing holds the GIL and the
    threads contend for it: 2 threads ~0.5x); 2 forked processes ~1.3-1.5x including their start.
    For a few hundred files the pool start costs more than it saves. So "auto" reads serially,
    and with worker processes for large folders when forking is safe (see ``_can_fork``).
    """
    cpus = os.cpu_count() or 1
    n_workers = max(1, min(workers or cpus, n_files))
    if executor == "serial" or n_workers == 1:
        return "serial", 1
    if executor == "thread":
        return "thread", n_workers
    if executor == "process":
        return ("process" if _can_fork() else "thread"), n_workers
    if n_files >= PROCESS_POOL_MIN_FILES and _can_fork():
        return "process", min(n_workers, cpus)
    return "serial", 1


def _can_fork() -> bool:
    """Whether worker processes can be forked safely: the platform has fork and this process
    runs a single thread (forking a multi-threaded process, e.g. one with an inference runtime's
    thread pool, can deadlock the child on a lock another thread held)."""
    import multiprocessing
    import threading

    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1  # native threads too, where /proc exists
    except OSError:
        return True


def _read_chunk(paths: List[str]) -> List[object]:
    return [read_header(p) for p in paths]


def _map(files: List[str], mode: str, n_workers: int) -> Iterator[Tuple[str, object]]:
    """(path, read_header(path)) for every file, in no particular order."""
    if mode == "serial" or len(files) <= 1:
        for path in files:
            yield path, read_header(path)
        return
    if mode == "thread":
        with ThreadPoolExecutor(n_workers, thread_name_prefix="dicom-header") as threads:
            yield from zip(files, threads.map(read_header, files))
        return
    import multiprocessing

    size = max(16, len(files) // (n_workers * 8))
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    # n_workers - 1 forked workers, and this process is the last worker: it takes chunks from the
    # back of the queue that no worker has started (a pending future can still be cancelled).
    # That saves a fork and the pickling of a share of the results, and keeps this core busy.
    with ProcessPoolExecutor(max(1, n_workers - 1), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_read_chunk, chunk) for chunk in chunks]
        done = set()
        for i in range(len(chunks) - 1, -1, -1):
            if not futures[i].cancel():
                break
            done.add(i)
            yield from zip(chunks[i], _read_chunk(chunks[i]))
        for i, chunk in enumerate(chunks):
            if i not in done:
                yield from zip(chunk, futures[i].result())


def build_studies(records: Iterable[HeaderRecord], rules: Optional[Sequence[ClassificationRule]],
                  skipped: List[SkippedFile]) -> List[Study]:
    """Group header records into studies and series: drop duplicate SOP instances and slices of
    a minority size (recorded in ``skipped``), classify each series and sort its slices."""
    records = sorted(records, key=lambda r: (r.path, -1 if r.frame is None else r.frame))
    # Of several files with one SOPInstanceUID (and frame), keep the one in the folder that holds
    # most of its series (a stray copy elsewhere must not pull the series out of its folder),
    # then the first.
    per_folder = Counter((r.series_uid, os.path.dirname(r.path)) for r in records)
    by_sop: Dict[Tuple[str, Optional[int]], HeaderRecord] = {}
    duplicates: Dict[Tuple[str, Optional[int]], List[HeaderRecord]] = defaultdict(list)
    for rec in records:
        key = (rec.sop_uid, rec.frame)
        first = by_sop.get(key)
        if first is None:
            by_sop[key] = rec
            continue
        if per_folder[(rec.series_uid, os.path.dirname(rec.path))] > per_folder[
                (first.series_uid, os.path.dirname(first.path))]:
            by_sop[key], rec = rec, first
        duplicates[key].append(rec)
    reported = set()  # a duplicated multi-frame file is reported once, not once per frame
    for sop, extra in duplicates.items():
        kept = by_sop[sop].path
        for rec in extra:
            if rec.path not in reported:
                reported.add(rec.path)
                skipped.append(SkippedFile(Path(rec.path), f"duplicate SOPInstanceUID of {kept}", "duplicate"))
    grouped: Dict[str, Dict[str, List[HeaderRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in by_sop.values():
        grouped[rec.study_uid][rec.series_uid].append(rec)
    studies = []
    for study_uid, series_map in grouped.items():
        series_records = {uid: _keep_majority_size(recs, skipped) for uid, recs in series_map.items()}
        study_id, series_ids = _rsna_ids(study_uid, series_records)
        series = [_build_series(recs, series_ids[uid], rules, skipped) for uid, recs in series_records.items()]
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
    ``<number>.dcm``, each series lives alone in one folder, all those folders share one parent,
    and the folder names are integers (as RSNA's ids), the folder names are the ids; otherwise
    the UIDs are."""
    uids = {uid: uid for uid in series_records}
    parents: Dict[str, str] = {}
    for uid, recs in series_records.items():
        dirs = set()
        for r in recs:
            folder, name = os.path.split(r.path)
            if not (name[-4:].lower() == ".dcm" and name[:-4].isdigit()):
                return study_uid, uids
            dirs.add(folder)
        if len(dirs) != 1:
            return study_uid, uids
        # abspath, not resolve: a symlinked folder keeps its own name.
        parents[uid] = os.path.abspath(dirs.pop())
    grandparents = {os.path.dirname(d) for d in parents.values()}
    if len(grandparents) != 1 or len(set(parents.values())) != len(parents):
        return study_uid, uids
    study_dir = grandparents.pop()
    # RSNA ids are integers; requiring digits keeps a flat study folder (files straight in it)
    # from being named after whatever folder happens to hold it.
    names = [os.path.basename(study_dir)] + [os.path.basename(d) for d in parents.values()]
    if not all(n.isdigit() for n in names):
        return study_uid, uids
    return os.path.basename(study_dir), {uid: os.path.basename(d) for uid, d in parents.items()}


def _normal(orientation: Optional[Tuple[float, ...]]) -> Optional[Tuple[float, float, float]]:
    """The unit slice normal of an ImageOrientationPatient, or None when missing or degenerate."""
    if orientation is None:
        return None
    try:
        return SliceGeometry.normal_of(orientation)
    except ValueError:
        return None


#: Slices whose normals differ by more than this belong to different stacks of their series.
STACK_ANGLE_DEG = 2.0
#: A gap of more than this many typical slice steps between parallel slices starts a new stack.
STACK_GAP_STEPS = 2.5
#: Parallel slices of one series closer than this (mm along their normal) lie in one plane: the
#: echoes of a multi-echo series, the images of a Dixon series, a repeated slice.
COLOCATED_MM = 0.05


def _build_series(recs: List[HeaderRecord], series_id: str, rules: Optional[Sequence[ClassificationRule]],
                  skipped: Optional[List[SkippedFile]] = None) -> Series:
    skipped = [] if skipped is None else skipped
    warnings: List[str] = []
    problem = None
    normals = {o: _normal(o) for o in {r.orientation for r in recs}}
    located = [r for r in recs if r.position is not None and normals[r.orientation] is not None]
    if located and len(located) < len(recs):
        # One slice without ImagePositionPatient (or a usable orientation) must not cost the
        # whole series its geometry: it is left out, and said so.
        for r in recs:
            if r.position is None or normals[r.orientation] is None:
                what = "ImagePositionPatient" if r.position is None else "a usable ImageOrientationPatient"
                skipped.append(SkippedFile(Path(r.path), f"slice has no {what}; its series is used without it",
                                           "no_geometry"))
        warnings.append(f"{len(recs) - len(located)} slice(s) without ImagePositionPatient or "
                        f"ImageOrientationPatient were left out of the series")
        recs = located
    if located:
        recs = _one_slice_per_plane(recs, normals, skipped, warnings)
    # Which tag gives the pixel size, read per record (the frames of one multi-frame file share
    # its path but may each have their own PixelMeasuresSequence).
    spacing_tag = None
    if any(r.pixel_spacing is not None for r in recs):
        spacing_tag = "pixel_spacing"
    elif any(r.imager_pixel_spacing is not None for r in recs):
        spacing_tag = "imager_pixel_spacing"
        warnings.append("no PixelSpacing: ImagerPixelSpacing is used for the pixel size, so distances in mm "
                        "may be off by the detector's magnification")
    elif located:
        problem = ("no PixelSpacing or ImagerPixelSpacing: the pixel size in mm is unknown, so keypoints "
                   "cannot be placed in patient space")
    instances = [Instance(
        file=r.path, sop_uid=r.sop_uid, instance_number=r.instance_number if r.instance_number is not None else 0,
        rows=r.rows, columns=r.columns, image_position=r.position, image_orientation=r.orientation,
        pixel_spacing=getattr(r, spacing_tag) if spacing_tag else None, photometric=r.photometric, rescale_slope=r.rescale_slope,
        rescale_intercept=r.rescale_intercept, transfer_syntax_uid=r.transfer_syntax_uid, bits_stored=r.bits_stored,
        pixel_representation=r.pixel_representation, pixel_padding_value=r.pixel_padding_value,
        pixel_padding_range_limit=r.pixel_padding_range_limit, frame=r.frame) for r in recs]
    normal = None
    spacing = None
    if located:  # every record left has its geometry (those without were left out above)
        groups = _orientation_groups([normals[r.orientation] for r in recs])
        planes = {plane_of_normal(n) for n, _members in groups}
        plane = planes.pop() if len(planes) == 1 else Plane.MIXED
        if plane is not Plane.MIXED:
            stacks = []
            for n, members in groups:
                n = _trained_sign(n, plane)
                nx, ny, nz = n
                for i in members:
                    x, y, z = instances[i].image_position
                    instances[i].position = x * nx + y * ny + z * nz
                members = sorted((instances[i] for i in members), key=lambda i: (i.position, i.instance_number, i.sop_uid))
                stacks.extend((n, part) for part in _split_at_gaps(members))
            # Stacks in order along the series' mean normal, as the slices within each are along
            # their own (for axials: from the feet to the head).
            mean = np.mean([n for n, _ in stacks], axis=0)
            stacks.sort(key=lambda st: float(np.mean([i.image_position for i in st[1]], axis=0) @ mean))
            instances = []
            steps = []
            for k, (_n, members) in enumerate(stacks):
                for inst in members:
                    inst.stack = k
                instances.extend(members)
                step = slice_spacing([i.position for i in members])
                if step is not None:
                    steps.extend([step] * (len(members) - 1))
            normal = stacks[0][0]
            spacing = float(np.median(steps)) if steps else None
        else:
            instances.sort(key=lambda i: (i.instance_number, i.sop_uid))
    else:
        plane = Plane.UNKNOWN
        instances.sort(key=lambda i: (i.instance_number, i.sop_uid))
    first = recs[0]
    if spacing is None:
        spacing = first.spacing_between_slices or first.slice_thickness
    seq = _series_sequence(recs)
    result = classify_series(plane, seq, rules)
    pixel_spacing = getattr(first, spacing_tag) if spacing_tag else None
    return Series(series_uid=first.series_uid, series_id=series_id, series_number=first.series_number,
                  description=first.series_description, kind=result.kind, plane=plane, weighting=result.weighting,
                  instances=instances, spacing=spacing, rows=first.rows, columns=first.columns,
                  pixel_spacing=tuple(pixel_spacing) if pixel_spacing else None,
                  normal=None if normal is None else np.array(normal), modality=first.modality,
                  classified_by=result.basis, rule=result.rule, sequence=seq.to_dict(), warnings=warnings,
                  problem=problem)


def _trained_sign(normal: Tuple[float, float, float], plane: Plane) -> Tuple[float, float, float]:
    """``normal`` or its opposite, whichever points the way the trained orientation's normal
    does: slices are sorted along it, so a series stored mirrored (which reverses its own
    normal) still gives the model its neighbours in the order it was trained on."""
    from .orient import TRAINED_ORIENTATION

    trained = TRAINED_ORIENTATION.get(plane)
    if trained is None:
        return normal
    t = np.cross(trained[0], trained[1])
    return normal if float(np.dot(normal, t)) >= 0 else (-normal[0], -normal[1], -normal[2])


def _orientation_groups(normals: List[Tuple[float, float, float]]) -> List[Tuple[Tuple[float, float, float], List[int]]]:
    """Indices grouped by slice normal: each group's members lie within :data:`STACK_ANGLE_DEG`
    of its first normal (antiparallel normals are one orientation, positions along the first)."""
    cos_tol = math.cos(math.radians(STACK_ANGLE_DEG))
    groups: List[Tuple[Tuple[float, float, float], List[int]]] = []
    for i, n in enumerate(normals):
        for ref, members in groups:
            if abs(ref[0] * n[0] + ref[1] * n[1] + ref[2] * n[2]) >= cos_tol:
                members.append(i)
                break
        else:
            groups.append((n, [i]))
    return groups


def _colocated_sets(recs: List[HeaderRecord], normals) -> List[List[int]]:
    """Indices of the records (all with geometry) that are one slice position, in sets of two
    or more: parallel slices (:func:`_orientation_groups`) whose ImagePositionPatient lie within
    :data:`COLOCATED_MM` of each other. (Slices in one plane but shifted within it, such as two
    stations of a composed spine, are not one position.)"""
    out: List[List[int]] = []
    for n, members in _orientation_groups([normals[r.orientation] for r in recs]):
        at = {i: float(np.dot(recs[i].position, n)) for i in members}  # position along the normal
        along = sorted(members, key=at.__getitem__)
        runs, run = [], [along[0]]
        for i in along[1:]:
            if at[i] - at[run[-1]] > COLOCATED_MM:
                runs.append(run)
                run = []
            run.append(i)
        runs.append(run)
        for run in (r for r in runs if len(r) > 1):  # one plane: grouped by where in it
            clusters: List[List[int]] = []
            for i in run:
                for c in clusters:
                    if float(np.linalg.norm(np.subtract(recs[i].position, recs[c[0]].position))) <= COLOCATED_MM:
                        c.append(i)
                        break
                else:
                    clusters.append([i])
            out.extend(c for c in clusters if len(c) > 1)
    return out


def _positions(recs: List[HeaderRecord], normals, sets: Optional[List[List[int]]] = None) -> int:
    """How many distinct slice positions ``recs`` hold (``sets``: their :func:`_colocated_sets`)."""
    sets = _colocated_sets(recs, normals) if sets is None else sets
    return len(recs) - sum(len(s) - 1 for s in sets)


def _echo_key(rec: HeaderRecord) -> Tuple:
    """What tells apart the images a series holds at one position: echo time (multi-echo),
    inversion time, image type (Dixon water / fat / in and opposed phase). Not TR, which some
    scanners vary from slice to slice."""
    return (rec.echo_time, rec.inversion_time, rec.image_type)


def _one_slice_per_plane(recs: List[HeaderRecord], normals, skipped: List[SkippedFile],
                         warnings: List[str]) -> List[HeaderRecord]:
    """``recs`` with one slice per plane, the others recorded in ``skipped`` and said in ``warnings``.

    A series that holds several images at one position is not a stack of slices (its slice
    spacing, neighbours and through-plane profile would be wrong): of a multi-echo or Dixon
    series the images of one echo are kept, the most numerous, on a tie the longest echo time
    (the T2-weighted echo of a PD/T2 pair); of a slice still repeated at one position, the last
    by instance number (the later acquisition)."""
    sets = _colocated_sets(recs, normals)
    if not sets:
        return recs
    keys = Counter(_echo_key(r) for r in recs)
    keep = max(keys, key=lambda k: (keys[k], k[0] if k[0] is not None else -1.0, str(k)))
    kept = [r for r in recs if _echo_key(r) == keep]
    # Split by echo only where one echo covers every position (a multi-echo or Dixon series);
    # a TE that varies a little from slice to slice beside a repeated slice is not an echo.
    if len(keys) > 1 and _positions(kept, normals) == _positions(recs, normals, sets):
        what = f"TE {keep[0]:g} ms" if keep[0] is not None else "one echo"
        for key in sorted((k for k in keys if k != keep), key=str):
            te = f"TE {key[0]:g} ms" if key[0] is not None else "no TE"
            _skip(skipped, [r for r in recs if _echo_key(r) == key],
                  f"another echo or image type ({te}, {'/'.join(key[2] or ())}) of a series holding {len(keys)} "
                  f"at each position; its {what} images are used", "other_echo")
        warnings.append(f"the series holds {len(keys)} echoes or image types at the same positions: "
                        f"its {len(kept)} {what} images are used")
        recs = kept
        sets = _colocated_sets(recs, normals)
    drop = set()
    frames_dropped = []
    for members in sets:
        # The later acquisition is kept (as selection prefers the later of two series: a repeat
        # is usually made because the first was not good enough).
        first, *rest = sorted(members, key=lambda i: (recs[i].instance_number is not None, recs[i].instance_number or 0,
                                                      recs[i].sop_uid, -1 if recs[i].frame is None else recs[i].frame),
                              reverse=True)
        drop.update(rest)
        for i in rest:
            if recs[i].frame is None:
                skipped.append(SkippedFile(Path(recs[i].path), f"same slice position as {recs[first].path} in its "
                                           f"series", "colocated"))
            else:
                frames_dropped.append(recs[i])
    # The frames of a multi-frame file: one entry per file, not one per frame.
    _skip(skipped, frames_dropped, "at the position of another slice of its series", "colocated")
    if drop:
        warnings.append(f"{len(drop)} slice(s) at the position of another slice of the series were left out")
    return [r for i, r in enumerate(recs) if i not in drop]


def _skip(skipped: List[SkippedFile], recs: List[HeaderRecord], reason: str, category: str) -> None:
    """Record ``recs`` as skipped: one entry per file (a multi-frame file's frames in one)."""
    frames: Dict[str, List[int]] = defaultdict(list)
    for r in recs:
        frames[r.path].append(-1 if r.frame is None else r.frame)
    for path, numbers in frames.items():
        which = "" if numbers == [-1] else f"{len(numbers)} frame(s): "
        skipped.append(SkippedFile(Path(path), which + reason, category))


def _split_at_gaps(members: List[Instance]) -> List[List[Instance]]:
    """Parallel slices sorted by position, cut where a gap is wider than :data:`STACK_GAP_STEPS`
    typical steps (two parallel stacks at different discs are two stacks)."""
    step = slice_spacing([i.position for i in members])
    if step is None:
        return [members]
    parts = [[members[0]]]
    for prev, inst in zip(members, members[1:]):
        if inst.position - prev.position > STACK_GAP_STEPS * step:
            parts.append([])
        parts[-1].append(inst)
    return parts


_SEQUENCE_FIELDS = operator.attrgetter(
    "repetition_time", "echo_time", "inversion_time", "scanning_sequence", "sequence_variant", "scan_options",
    "sequence_name", "image_type", "series_description")


def _series_sequence(recs: List[HeaderRecord]) -> SequenceInfo:
    """The series' sequence values: the most common combination over its instances (so a stray
    instance does not change the classification)."""
    (tr, te, ti, scanning, variant, options, name, image_type, description), _n = (
        Counter(_SEQUENCE_FIELDS(r) for r in recs).most_common(1)[0])
    return SequenceInfo(repetition_time=tr, echo_time=te, inversion_time=ti, scanning_sequence=scanning,
                        sequence_variant=variant, scan_options=options, sequence_name=name, image_type=image_type,
                        description=description, n_slices=len(recs))

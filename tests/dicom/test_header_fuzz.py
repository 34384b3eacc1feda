"""Seeded mutation fuzzing of the header reader, with pydicom as the arbiter (issue 17, defect 7).

Real files written by pydicom (see ``header_fuzzing.seed_files``) are mutated (bit flips, byte
insertions and deletions, truncations, corrupted VRs, NULs in numbers, lengths set to edge values,
another transfer syntax named in the meta) and each result is read by both readers:
``fastread.read_tags`` may raise only Unhandled/Truncated, ``read_header`` never raises, its skip
reasons are one line, and every record it returns equals the pydicom path's record.

In the normal suite the run is a fixed number of cases from a fixed seed (a few seconds). CI's
fuzz step runs it longer (``LUMBAR_EDGE_FUZZ_SECONDS``; ``LUMBAR_EDGE_FUZZ_SEED`` picks another
seed) and atheris where it installs (``atheris_headers.py``). A failure names the seed and the
case number: ``LUMBAR_EDGE_FUZZ_SEED=S LUMBAR_EDGE_FUZZ_CASES=N+1`` replays it.
"""
import os
import random
import time
from collections import Counter

import pytest

from header_fuzzing import check, mutate, seed_files
from lumbar_edge.dicom import headers

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEED = int(os.environ.get("LUMBAR_EDGE_FUZZ_SEED", "17"))
CASES = int(os.environ.get("LUMBAR_EDGE_FUZZ_CASES", "300"))
SECONDS = float(os.environ.get("LUMBAR_EDGE_FUZZ_SECONDS", "0"))


def test_every_seed_is_read_alike_by_both_readers(tmp_path, dcm):
    seeds = seed_files(dcm.make_dataset, dcm.save, tmp_path / "seeds")
    outcomes = {name: check(data, tmp_path / "case.dcm") for name, data in seeds.items()}
    # The plain little-endian seeds (compressed ones included) go through the fast reader, the
    # others through pydicom, and every one of them is a record, equal on both paths.
    assert outcomes == {
        "Explicit VR Little Endian": "fast:record", "Implicit VR Little Endian": "fast:record",
        "Explicit VR Big Endian": "unhandled:record", "JPEG 2000 Image Compression (Lossless Only)": "fast:record",
        "RLE Lossless": "fast:record", "implicit data, explicit meta": "unhandled:record",
        "explicit data, implicit meta": "unhandled:record", "bare: meta without preamble": "unhandled:record",
        "bare: Implicit VR Little Endian data set": "unhandled:record",
        "bare: Explicit VR Big Endian data set": "unhandled:record",
    }


def test_mutated_files_never_break_the_reader_and_records_match_pydicom(tmp_path, dcm, capsys):
    seeds = seed_files(dcm.make_dataset, dcm.save, tmp_path / "seeds")
    names = sorted(seeds)
    rng = random.Random(SEED)
    deadline = time.monotonic() + SECONDS if SECONDS > 0 else None
    outcomes: Counter = Counter()
    executed = 0
    while (time.monotonic() < deadline) if deadline is not None else (executed < CASES):
        name = rng.choice(names)
        data = mutate(seeds[name], rng)
        try:
            outcomes[check(data, tmp_path / "case.dcm")] += 1
        except Exception as exc:  # noqa: BLE001 - any failure is reported with how to replay it
            (tmp_path / "failure.dcm").write_bytes(data)
            raise AssertionError(f"seed {SEED}, case {executed} (a mutation of {name!r}, kept as "
                                 f"{tmp_path / 'failure.dcm'}): {type(exc).__name__}: {exc}") from exc
        executed += 1
    with capsys.disabled():
        print(f"\nheader fuzz: {executed} executions, seed {SEED}, outcomes {dict(sorted(outcomes.items()))}")
    # The mutations reach both readers and both verdicts: records from the fast reader and from
    # pydicom, skips for truncation, and files the fast reader hands over.
    fast_records = outcomes["fast:record"]
    pydicom_records = outcomes["unhandled:record"]
    truncated = sum(n for outcome, n in outcomes.items() if outcome.endswith(":truncated"))
    assert min(fast_records, pydicom_records, truncated) >= executed // 20, outcomes
    assert sum(n for outcome, n in outcomes.items() if outcome.startswith("unhandled:")) >= executed // 5, outcomes


def test_a_bug_in_the_fast_reader_is_not_a_crash(tmp_path, dcm, monkeypatch):
    # read_header's last line of defence: were the fast reader to raise anything else, the file
    # is read by pydicom (the fuzz tests hold the fast reader itself to Unhandled/Truncated).
    path = dcm.save(dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4"), tmp_path / "a.dcm")
    expected = headers.read_header(str(path))

    def broken(fp, size):
        raise UnicodeDecodeError("ascii", b"\xc9", 0, 1, "a bug")

    monkeypatch.setattr(headers, "read_tags", broken)
    assert headers.read_header(str(path)) == expected

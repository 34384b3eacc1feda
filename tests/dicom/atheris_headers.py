"""Coverage-guided fuzzing of the DICOM header reader with atheris: CI's fuzz step (issue 17).

Not collected by pytest. Seeds are the real files of ``header_fuzzing.seed_files`` (written into
the corpus folder when it is empty); each input is mutated by libFuzzer or, half the time, by the
DICOM-aware mutations of ``header_fuzzing.mutate``, and checked by ``header_fuzzing.check``
(pydicom is the arbiter). Any exception, any record differing from pydicom's, ends the run with
a non-zero status and a crash file that replays it (``python atheris_headers.py CRASH_FILE``).

Usage: ``python tests/dicom/atheris_headers.py CORPUS_DIR -max_total_time=90 -max_len=16384``
(needs ``pip install 'lumbar-edge[fuzz]'``).
"""
import logging
import random
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["lumbar_edge.dicom"]):
    from lumbar_edge.dicom import fastread, headers, pixels  # noqa: F401 - instrumented for coverage

import header_fuzzing  # noqa: E402
from conftest import make_dataset, save  # noqa: E402


def main() -> None:
    # pydicom warns (and logs) about every malformed file; the verdicts are what is checked.
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="lumbar-edge-fuzz-"))
    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None and corpus.is_dir() and not any(corpus.iterdir()):
        for name, data in header_fuzzing.seed_files(make_dataset, save, work / "seeds").items():
            (corpus / name.replace(" ", "_").replace(",", "")).write_bytes(data)
    case = work / "case.dcm"

    def test_one_input(data: bytes) -> None:
        header_fuzzing.check(data, case)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return header_fuzzing.mutate(data, rng)[:max_size]

    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

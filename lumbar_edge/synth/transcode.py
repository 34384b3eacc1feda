"""Re-encode DICOM files to another transfer syntax (a post-processing step of the generator, for
tests and ``lumbar-edge synth --transfer-syntax NAME``): what a PACS export looks like.

Compressed syntaxes are encoded by pydicom's ``Dataset.compress`` with the installed encoder
plugins (pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS, pydicom or pylibjpeg-rle for
RLE); the deflated syntax is written by pydicom's writer. Lossless syntaxes only: the pixels
decode to exactly what was written, so a transcoded study grades as the original, and every
file keeps its SOPInstanceUID (a lossless change of transfer syntax is the same instance).
Multi-frame files are encoded frame by frame.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Union

from ..errors import InputError

#: The names ``--transfer-syntax`` takes, and their transfer syntax UIDs.
TRANSFER_SYNTAXES: Dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
}
_NATIVE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99")


def transfer_syntax_uid(name: str) -> str:
    """The UID of a ``--transfer-syntax`` name (or a UID among them); raises :class:`InputError`."""
    key = str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if key in TRANSFER_SYNTAXES:
        return TRANSFER_SYNTAXES[key]
    if name in TRANSFER_SYNTAXES.values():
        return str(name)
    raise InputError(f"unknown transfer syntax {name!r}; known: {', '.join(TRANSFER_SYNTAXES)}")


def transcode_file(src: Union[str, os.PathLike], dest: Union[str, os.PathLike], syntax: str) -> Path:
    """Write the DICOM file ``src`` re-encoded in ``syntax`` (a name of :data:`TRANSFER_SYNTAXES`
    or its UID) to ``dest`` (through a temporary name and a rename; ``dest`` may be ``src``).

    Raises :class:`InputError` for an unknown syntax, a file without pixel data, or pixel data
    the encoder refuses; :class:`~lumbar_edge.errors.MissingDependencyError` when no encoder
    plugin for it is installed; ``OSError`` when a file cannot be read or written.
    """
    import pydicom

    uid = pydicom.uid.UID(transfer_syntax_uid(syntax))
    ds = pydicom.dcmread(src)
    if "PixelData" not in ds:
        raise InputError(f"{src}: no pixel data to re-encode")
    current = pydicom.uid.UID(ds.file_meta.TransferSyntaxUID)
    # Lossless re-encoding keeps the SOP instance (pydicom would draw a new SOPInstanceUID).
    if current.is_compressed:
        ds.decompress(generate_instance_uid=False)
    if uid in _NATIVE:
        ds.file_meta.TransferSyntaxUID = uid
    else:
        _compress(ds, uid, src)
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    ds.save_as(tmp, enforce_file_format=True, implicit_vr=uid == pydicom.uid.ImplicitVRLittleEndian,
               little_endian=True)
    os.replace(tmp, out)
    return out


def _compress(ds, uid, src) -> None:
    from pydicom.pixels import get_encoder

    from ..errors import MissingDependencyError

    encoder = get_encoder(uid)
    if not encoder.is_available:
        raise MissingDependencyError(f"encoding {uid.name}", ["pylibjpeg-openjpeg", "pyjpegls"], "codecs")
    try:
        ds.compress(uid, generate_instance_uid=False)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{src}: cannot encode as {uid.name}: {exc}") from exc


def transcode_tree(root: Union[str, os.PathLike], syntax: str) -> List[Path]:
    """Re-encode, in place, every ``*.dcm`` file under ``root`` (the generator's own output);
    returns the files re-encoded."""
    done = []
    for path in sorted(Path(root).rglob("*.dcm")):
        done.append(transcode_file(path, path, syntax))
    return done


#: The realistic mix's encodings, cycled over the study indices from a seed-dependent offset:
#: a quarter of the studies Enhanced MR, and the transfer syntaxes a PACS export or a scanner
#: proposes (half of the studies compressed).
_MIX_ENHANCED = 4
_MIX_SYNTAX = ("", "jpeg2000", "", "jpegls", "", "rle", "", "deflated", "jpeg2000", "implicit")


def realistic_encoding(seed: int, index: int) -> "tuple[bool, str]":
    """(Enhanced MR, transfer syntax name or "") of study ``index`` in the realistic mix of the
    dataset made with ``seed``."""
    from .variants import mix_offsets

    offsets = mix_offsets(seed, 7, 2)
    return (index + offsets[0]) % _MIX_ENHANCED == 0, _MIX_SYNTAX[(index + offsets[1]) % len(_MIX_SYNTAX)]


def postprocess_realistic(out_dir: Union[str, os.PathLike]) -> Dict[str, int]:
    """Apply the realistic mix's encodings (:func:`realistic_encoding`) to a dataset written by
    ``synthesize(..., realistic=True)``, study by study, in place; returns how many studies got
    each encoding ("enhanced", and each syntax name)."""
    import json

    from .dataset import TRUTH_FILE
    from .enhanced import convert_study

    out = Path(out_dir)
    truth = json.loads((out / TRUTH_FILE).read_text())
    counts: Dict[str, int] = {}
    for st in truth["studies"]:
        enhanced, syntax = realistic_encoding(int(truth["seed"]), int(st["index"]))
        study = out / "train_images" / str(st["study_id"])
        if enhanced:
            convert_study(study)
            counts["enhanced MR"] = counts.get("enhanced MR", 0) + 1
        if syntax:
            transcode_tree(study, syntax)
        counts[syntax or "explicit"] = counts.get(syntax or "explicit", 0) + 1
    return counts


def postprocess_dataset(out_dir: Union[str, os.PathLike], enhanced_mr: bool = False,
                        transfer_syntax: str = "") -> int:
    """The ``synth`` options that change how a written dataset is encoded, applied in place to
    its ``train_images``: ``enhanced_mr`` turns each series into one Enhanced MR file (frame
    numbers equal the classic instance numbers, so the label CSVs still name the right slice),
    then ``transfer_syntax`` (a :data:`TRANSFER_SYNTAXES` name; "" keeps explicit VR little
    endian) re-encodes every file. Returns the number of files re-encoded or converted.
    Raises :class:`InputError` for an unknown syntax (checked before anything is changed)."""
    from .enhanced import convert_study

    if transfer_syntax:
        transfer_syntax_uid(transfer_syntax)
    images = Path(out_dir) / "train_images"
    count = 0
    if enhanced_mr:
        for study in sorted(p for p in images.iterdir() if p.is_dir()):
            count += len(convert_study(study))
    if transfer_syntax:
        count = len(transcode_tree(images, transfer_syntax))
    return count

"""`lumbar-edge synth --enhanced-mr --transfer-syntax NAME`: the written dataset is one Enhanced MR
object per series, in the chosen transfer syntax, and scans to the three series a plain run gives."""
import pydicom

from lumbar_edge.cli import main
from lumbar_edge.dicom import scan_path
from lumbar_edge.synth.enhanced import ENHANCED_MR_STORAGE
from lumbar_edge.synth.transcode import TRANSFER_SYNTAXES


def test_synth_writes_enhanced_mr_in_the_chosen_transfer_syntax(tmp_path, capsys):
    args = ["synth", "--studies", "1", "--seed", "8", "--workers", "1", "-q"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--out", str(tmp_path / "enh"), "--enhanced-mr", "--transfer-syntax", "jpegls"]) == 0
    files = sorted((tmp_path / "enh" / "train_images").rglob("*.dcm"))
    assert len(files) == 3 and all(p.name == "1.dcm" for p in files)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPClassUID == ENHANCED_MR_STORAGE and ds.NumberOfFrames > 1
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES["jpegls"]
    plain, enh = scan_path(tmp_path / "plain" / "train_images"), scan_path(tmp_path / "enh" / "train_images")
    assert [(s.kind, len(s.instances)) for s in enh.studies[0].series] == [
        (s.kind, len(s.instances)) for s in plain.studies[0].series]
    # The label CSVs name instance numbers: frame numbers of the Enhanced objects are the same.
    assert (tmp_path / "enh" / "train_label_coordinates.csv").read_text() == (
        tmp_path / "plain" / "train_label_coordinates.csv").read_text()


def test_synth_refuses_an_unknown_transfer_syntax_before_writing(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "x"), "--studies", "1", "-q", "--transfer-syntax", "jpeg2001"])
    assert code != 0
    assert not (tmp_path / "x").exists()

"""Packaging and import-weight rules from shared/DESIGN.md."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lumbar_edge
from lumbar_edge.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_importing_lumbar_edge_never_imports_torch_or_tensorrt():
    code = (
        "import sys, lumbar_edge, lumbar_edge.cli, lumbar_edge.preprocess, lumbar_edge.labels;"
        "heavy = [m for m in ('torch', 'tensorrt', 'tensorrt_lean', 'pycuda', 'onnx') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "lumbar_edge", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert lumbar_edge.__version__ in out.stdout


def test_main_returns_exit_status_instead_of_exiting(capsys):
    assert main(["--help"]) == 0
    assert "scan" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


@pytest.mark.slow
def test_wheel_maps_training_and_export_under_the_lumbar_edge_namespace(tmp_path):
    # Build the real wheel: nothing may land in site-packages as a top-level `training` or
    # `export` module, which would shadow other software's packages of those names.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("lumbar_edge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "training" not in top and "export" not in top and "benchmarks" not in top
    assert "lumbar_edge/training/__init__.py" in names
    assert "lumbar_edge/export/__init__.py" in names
    assert any(n.startswith("lumbar_edge/kernels/") and n.endswith(".cu") for n in names)
    # Where nvcc is present (CI), the package ships the decode kernel prebuilt (setup.py builds it).
    if shutil.which("nvcc") is not None:
        assert "lumbar_edge/kernels/decode.fatbin" in names and "lumbar_edge/kernels/decode.fatbin.json" in names

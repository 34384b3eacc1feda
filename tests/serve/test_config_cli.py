"""``lumbar-edge serve`` settings and command line: checks, one-line user errors, the missing
``serve`` extra, and imports that stay light."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from lumbar_edge.cli import main
from lumbar_edge.errors import InputError
from lumbar_edge.serve import ServeConfig, parse_forward
from lumbar_edge.serve.config import check_ae_title
from lumbar_edge.serve.forward import backoff


def test_parse_forward():
    t = parse_forward("pacs.local:104:PACS")
    assert (t.host, t.port, t.ae_title, str(t)) == ("pacs.local", 104, "PACS", "PACS@pacs.local:104")
    assert parse_forward("[::1]:11112:ARCHIVE").host == "::1"
    for bad, why in (("pacs:104", "HOST:PORT:AET"), ("pacs:x:PACS", "not a number"), ("pacs:0:PACS", "1..65535"),
                     ("pacs:104:", "empty"), ("pacs:104:THIS_AE_TITLE_IS_TOO_LONG", "longer than 16")):
        with pytest.raises(InputError, match=why):
            parse_forward(bad)


def test_ae_titles_are_checked():
    assert check_ae_title(" SCANNER ") == "SCANNER"
    for bad in ("", "   ", "A" * 17, "BACK\\SLASH", "TAB\tX", "CAFÉ"):
        with pytest.raises(InputError):
            check_ae_title(bad)


def test_config_checks(tmp_path):
    base = dict(model=tmp_path, spool=tmp_path / "spool", out=tmp_path / "out")
    cfg = ServeConfig(**base).checked()
    assert cfg.spool.is_absolute() and cfg.port == 11112
    for changes, why in ((dict(model=tmp_path / "nope"), "no such model bundle"),
                         (dict(out=tmp_path / "spool" / "out"), "must not contain each other"),
                         (dict(spool=tmp_path / "out"), "must not contain each other"),
                         (dict(quiet_time=0), "quiet-time must be positive"),
                         (dict(max_pdu=100), "--max-pdu"),
                         (dict(max_associations=0), "--max-associations"),
                         (dict(retry_base=10, retry_max=1), "back-off"),
                         (dict(allow=("OK", "")), "--allow AE title is empty")):
        with pytest.raises(InputError, match=why):
            ServeConfig(**{**base, **changes}).checked()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        ServeConfig(**{**base, "spool": tmp_path / "afile"}).checked()


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_cli_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    common = ["serve", "--model", str(tmp_path), "--spool", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    assert main(common + ["--forward", "nonsense"]) == 2
    assert capsys.readouterr().err.strip() == "error: --forward 'nonsense': expected HOST:PORT:AET, e.g. pacs.local:104:PACS"
    assert main(common[:2] + [str(tmp_path / "missing")] + common[3:]) == 2
    assert "no such model bundle" in capsys.readouterr().err


def test_a_port_in_use_is_a_user_error(tiny_bundle, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["serve", "--model", str(tiny_bundle), "--spool", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                     "--host", "127.0.0.1", "--port", str(port), "--backend", "onnxruntime"])
    assert code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_without_pynetdicom_serve_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['pynetdicom'] = None\n"
            "from lumbar_edge.cli import main\n"
            f"sys.exit(main(['serve', '--model', {str(tmp_path)!r}, '--spool', {str(tmp_path / 's')!r}, "
            f"'--out', {str(tmp_path / 'o')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pynetdicom" in proc.stderr and "pip install 'lumbar-edge[serve]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_lumbar_edge_and_its_listener_imports_no_heavy_package():
    code = ("import sys, lumbar_edge, lumbar_edge.cli, lumbar_edge.serve, lumbar_edge.serve.server\n"
            "print(sorted(m for m in ('pynetdicom', 'torch', 'tensorrt') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

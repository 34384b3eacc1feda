"""`lumbar-edge bench` on a tiny bundle and study: the table, the JSON, the chart, the n/a rows.

No timing is asserted (speed claims live in benchmarks/ outputs): only that every figure is there,
well-formed and consistent.
"""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lumbar_edge.backends import BACKENDS, _load_class
from lumbar_edge.bench import STAGES, StageTimer, percentiles
from lumbar_edge.cli import main


@pytest.fixture(scope="module")
def one_study(tiny_rsna):
    _, val_dir = tiny_rsna
    return next(p for p in sorted((val_dir / "train_images").iterdir()) if p.is_dir())


def _png_size_and_pixels(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    raw = zlib.decompress(chunks[b"IDAT"])
    assert depth == 8 and colour == 2 and len(raw) == height * (1 + 3 * width)
    return width, height, raw


def test_bench_cli_prints_every_stage_and_writes_json_and_chart(tiny_bundle, one_study, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny_bundle), "--study", str(one_study), "--batch", "1,4",
                 "--warmup", "0", "--iters", "3", "--json", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0, text
    for _key, label in STAGES:
        assert label in text
    assert "p50 ms" in text and "onnxruntime/fp32 b1" in text and "onnxruntime/fp32 b4" in text
    doc = json.loads(out.read_text())
    assert [s["key"] for s in doc["stages"]] == [k for k, _ in STAGES]
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    cpu_engines = ["onnxruntime"] + (["openvino"] if _load_class("openvino", BACKENDS).is_available() else [])
    assert [(r["backend"], r["precision"], r["batch"]) for r in ok] == [
        (name, "fp32", b) for name in cpu_engines for b in (1, 4)]
    if "openvino" in cpu_engines:
        assert "openvino/fp32 b1" in text and "openvino" in doc["machine"] and doc["machine"]["openvino"]
        engine = next(r for r in ok if r["backend"] == "openvino")["engine"]
        # One study at a time: the latency hint, on the CPU, in FP32.
        assert engine["hint"] == "latency" and engine["device"] == "CPU" and engine["inference_precision"] == "f32"
    else:
        row = next(r for r in doc["rows"] if r["backend"] == "openvino")
        assert row["status"] == "n/a" and "lumbar-edge[openvino]" in row["reason"]
    for r in ok:
        lat = r["latency_s"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and r["runs"] == 3
        assert r["throughput"]["slices_per_s"] > 0 and r["throughput"]["studies_per_s"] > 0
        assert r["slices_per_study"] > 0 and r["memory"]["host_peak_bytes"] > 0
        assert r["memory"]["gpu_peak_bytes"] is None
        stages = r["stages"]
        assert "na" in stages["h2d"] and "na" in stages["d2h"]
        assert stages["decode"]["implementation"] == "numpy"
        for key in ("scan", "decode_pixels", "preprocess", "engine", "decode", "report"):
            assert stages[key]["p50_s"] > 0 and 0 < stages[key]["share"] < 1
        assert sum(s.get("mean_s", 0.0) for s in stages.values()) == pytest.approx(lat["mean"], rel=1e-6)
    # The GPU backends are listed with why they cannot run (here: no GPU), never silently dropped.
    for name in ("torch", "tensorrt"):
        row = next(r for r in doc["rows"] if r["backend"] == name)
        if _load_class(name, BACKENDS).unavailable_reason() is not None:
            assert row["status"] == "n/a" and row["reason"]
            assert f"{name}: n/a: " in text
    chart = tmp_path / "bench.png"  # beside --json by default
    width, height, raw = _png_size_and_pixels(chart.read_bytes())
    assert width >= 600 and height >= 150
    assert len(set(raw[1:1 + 3 * width])) >= 1 and len(set(raw)) > 10  # more than a blank canvas


def test_bench_refuses_bad_options_in_one_line(tiny_bundle, tiny_rsna, capsys):
    _, val_dir = tiny_rsna
    assert main(["bench", "--model", str(tiny_bundle), "--batch", "0,x", "-q"]) == 2
    assert capsys.readouterr().err.startswith("error: --batch")
    # A root of several studies is not one study.
    assert main(["bench", "--model", str(tiny_bundle), "--study", str(val_dir / "train_images"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --study") and len(err.strip().splitlines()) == 1


def test_stage_timer_and_percentiles():
    timer = StageTimer()
    with timer.stage("engine", 4):
        pass
    with timer.stage("engine", 2):
        pass
    timer.add("report", 0.5)
    assert timer.items == {"engine": 6} and timer.seconds["report"] == 0.5 and timer.seconds["engine"] >= 0
    timer.reset()
    assert timer.seconds == {} and timer.items == {}
    p = percentiles([3.0, 1.0, 2.0, 10.0])
    assert p["p50"] <= p["p90"] <= p["p99"] <= p["max"] == 10.0 and p["min"] == 1.0 and p["mean"] == 4.0


def test_an_engine_without_a_timer_times_nothing():
    from lumbar_edge.backends.base import Engine

    class Echo(Engine):  # 1x8x8 inputs in, maps of zeros out
        def _activate(self):
            self.input_shape = (None, 1, 8, 8)

        def _infer(self, images):
            return {name: np.zeros((images.shape[0], c, 2, 2), np.float32)
                    for name, c in (("heatmap", 1), ("offset", 2), ("severity", 3))}

        def _deactivate(self):
            pass

    with Echo() as engine:
        assert engine.stage("engine") is engine.stage("decode")  # one shared no-op context
        engine.infer_decoded(np.zeros((2, 1, 8, 8), np.float32), [0])
        engine.timer = timer = StageTimer()
        engine.infer_decoded(np.zeros((2, 1, 8, 8), np.float32), [0])
    assert set(timer.seconds) == {"engine", "decode"} and timer.items == {"engine": 2}
    assert engine.device_memory() is None


def test_the_text_report_states_the_torch_backends_fp32_math():
    from lumbar_edge.bench.output import format_report
    from lumbar_edge.bench.runner import BenchReport

    def row(precision, fp32_math):
        stages = {k: {"p50_s": 0.001, "mean_s": 0.001, "share": 0.1} for k, _ in STAGES}
        stages["decode"]["implementation"] = "cuda kernel"
        return {"backend": "torch", "precision": precision, "batch": 8, "status": "ok", "reason": None, "runs": 3,
                "slices_per_study": 15, "latency_s": {"p50": 0.01, "p90": 0.011, "p99": 0.012, "mean": 0.01},
                "throughput": {"studies_per_s": 100.0, "slices_per_s": 1500.0}, "stages": stages,
                "memory": {"host_peak_bytes": 2**20, "gpu_peak_bytes": 2**20}, "engine": {"fp32_math": fp32_math}}

    report = BenchReport(
        machine={"processor": "x", "cpus": 2, "gpu": "NVIDIA H200", "python": "3.11", "onnxruntime": "1", "torch": "2"},
        bundle={"name": "b", "input": [256, 256]}, study={"study_id": "1", "files": 15, "series": []},
        settings={"job": "one study", "warmup": 1, "iters": 3},
        rows=[row("fp32", "ieee (TF32 off)"), row("fp16", "n/a (fp16)")])
    text = format_report(report)
    assert "  FP32 math: torch/fp32 b8: ieee (TF32 off)" in text.splitlines()
    assert "fp16: n/a" not in text

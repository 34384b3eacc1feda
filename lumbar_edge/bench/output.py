"""What ``lumbar-edge bench`` prints and writes: the terminal table, the JSON, the stage chart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from ..report._io import atomic_write_bytes
from .runner import BenchReport
from .timer import STAGES

MIB = 1024 * 1024


def _config(row: Dict[str, object]) -> str:
    name = f"{row['backend']}/{row['precision']}" if row.get("precision") else str(row["backend"])
    return name + (f" b{row['batch']}" if row.get("batch") else "")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> List[str]:
    """Left-aligned first column, right-aligned others; every cell as ``str``."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
            for r in cells]


def format_report(report: BenchReport) -> str:
    """The terminal table: one latency/throughput/memory line per row, then the stage split."""
    d = report.to_dict()
    m, st = d["machine"], d["study"]
    series = ", ".join(f"{s['kind']} {s['slices']}" for s in st["series"])
    lines = [
        f"lumbar-edge bench: {d['bundle']['name']} ({d['bundle']['input'][0]}x{d['bundle']['input'][1]} px), "
        f"study {st['study_id']}{' (synthetic)' if st.get('synthetic') else ''}: {st['files']} files ({series})",
        f"machine: {m['processor']}, {m['cpus']} CPUs, {m['gpu'] or 'no GPU'}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, openvino {m.get('openvino')}, torch {m['torch']}",
        f"job: {d['settings']['job']}; {d['settings']['warmup']} warm-up + {d['settings']['iters']} timed runs per row",
        "",
    ]
    rows = []
    for r in d["rows"]:
        if r["status"] != "ok":
            rows.append([_config(r), f"{r['status']}: {r['reason']}"] + [""] * 7)
            continue
        lat, thr, mem = r["latency_s"], r["throughput"], r["memory"]
        gpu = f"{mem['gpu_peak_bytes'] / MIB:.0f}" if mem["gpu_peak_bytes"] is not None else "n/a"
        rows.append([_config(r), f"{lat['p50'] * 1e3:.0f}", f"{lat['p90'] * 1e3:.0f}", f"{lat['p99'] * 1e3:.0f}",
                     f"{thr['slices_per_s']:.1f}", f"{thr['studies_per_s']:.3f}", r["slices_per_study"],
                     f"{mem['host_peak_bytes'] / MIB:.0f}", gpu])
    header = ["backend/precision batch", "p50 ms", "p90 ms", "p99 ms", "slices/s", "studies/s", "slices",
              "host MiB", "GPU MiB"]
    # An n/a row's reason spans the figure columns: print it after the name instead of in a cell.
    ok = [r for r in rows if r[2] != ""]
    lines += table(header, ok)
    lines += [f"  {r[0]}: {r[1]}" for r in rows if r[2] == ""]
    good = report.ok_rows
    if good:
        lines += ["", "stage split: median ms per study (share of the mean study time)"]
        srows = []
        for key, label in STAGES:
            cells: List[object] = [label]
            for r in good:
                s = r["stages"][key]
                cells.append("n/a" if "na" in s else f"{s['p50_s'] * 1e3:.1f} ({s['share'] * 100:.0f}%)")
            srows.append(cells)
        srows.append(["total (p50)"] + [f"{r['latency_s']['p50'] * 1e3:.1f}" for r in good])
        lines += table(["stage"] + [_config(r) for r in good], srows)
        notes = sorted({f"{k}: n/a, {r['stages'][k]['na']}" for r in good for k, _ in STAGES if "na" in r["stages"][k]})
        decoders = sorted({f"{_config(r)}: {r['stages']['decode']['implementation']}" for r in good})
        lines += [f"  {n}" for n in notes] + [f"  decode runs as: {'; '.join(decoders)}"]
        # The torch backend's FP32 is IEEE FP32 (TF32 off); say so next to its figures.
        math = sorted({f"{_config(r)}: {r['engine']['fp32_math']}" for r in good
                       if r.get("engine", {}).get("fp32_math") and r["precision"] == "fp32"})
        if math:
            lines.append(f"  FP32 math: {'; '.join(math)}")
    return "\n".join(lines)


def write_json(report: BenchReport, path: Union[str, Path]) -> Path:
    """The report as JSON, written atomically."""
    return atomic_write_bytes(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())


#: One colour per stage, in :data:`STAGES` order (colour-blind-safe palette, Okabe-Ito + grey).
STAGE_COLOURS = ((0, 114, 178), (86, 180, 233), (0, 158, 115), (240, 228, 66), (213, 94, 0), (204, 121, 167),
                 (230, 159, 0), (120, 94, 240), (160, 160, 160))


def render_chart(report: BenchReport) -> np.ndarray:
    """The stage split as a PNG-ready RGB image: one horizontal bar per measured row, one
    segment per stage (mean ms per study), an axis in ms and a legend."""
    from ..report import png

    good = report.ok_rows
    scale, pad, bar_h, gap = 2, 16, 28, 14
    label_w = max([png.text_size(_config(r), scale)[0] for r in good] + [png.text_size("row", scale)[0]]) + pad
    plot_w = 720
    legend_rows = (len(STAGES) + 2) // 3
    title_h = 2 * png.text_size("X", scale)[1] + 3 * pad
    height = title_h + max(1, len(good)) * (bar_h + gap) + 40 + legend_rows * 22 + 2 * pad
    width = pad + label_w + plot_w + 3 * pad
    img = png.new_canvas(height, width, (255, 255, 255))
    black, grey = (0, 0, 0), (200, 200, 200)
    d = report.to_dict()
    png.draw_text(img, pad, pad, f"lumbar-edge bench: stage split per study ({d['bundle']['name']})", black, scale=scale)
    png.draw_text(img, pad, pad + 22, f"{d['machine']['processor']}, {d['machine']['cpus']} CPUs, "
                  f"{d['machine']['gpu'] or 'no GPU'}; mean of {d['settings']['iters']} runs", black, scale=1)
    x0, y = pad + label_w, title_h
    longest = max([r["latency_s"]["mean"] for r in good] + [1e-9])
    step = _nice_step(longest * 1e3 / 5)
    full_ms = step * int(np.ceil(longest * 1e3 / step))
    px_per_ms = plot_w / full_ms
    if not good:
        png.draw_text(img, x0, y, "no configuration ran (see the table)", black, scale=scale)
    for r in good:
        png.draw_text(img, pad, y + (bar_h - 14) // 2, _config(r), black, scale=scale)
        x = float(x0)
        for (key, _), colour in zip(STAGES, STAGE_COLOURS):
            s = r["stages"][key]
            if "na" in s:
                continue
            w = s["mean_s"] * 1e3 * px_per_ms
            if w >= 0.5:
                png.rectangle(img, x, y, x + w, y + bar_h, colour, fill=True)
            x += w
        png.draw_text(img, int(x) + 6, y + (bar_h - 7) // 2, f"{r['latency_s']['mean'] * 1e3:.0f} ms", black, scale=1)
        y += bar_h + gap
    axis_y = y
    png.line(img, x0, axis_y, x0 + plot_w, axis_y, black)
    for i in range(int(round(full_ms / step)) + 1):
        tx = x0 + i * step * px_per_ms
        png.line(img, tx, title_h - 4, tx, axis_y, grey)
        png.line(img, tx, axis_y, tx, axis_y + 5, black)
        label = f"{i * step:g}"
        png.draw_text(img, int(tx - png.text_size(label)[0] / 2), axis_y + 8, label, black)
    png.draw_text(img, x0 + plot_w - png.text_size("ms per study")[0], axis_y + 22, "ms per study", black)
    ly = axis_y + 40
    for i, ((_, label), colour) in enumerate(zip(STAGES, STAGE_COLOURS)):
        lx = pad + (i % 3) * ((width - 2 * pad) // 3)
        yy = ly + (i // 3) * 22
        png.rectangle(img, lx, yy, lx + 14, yy + 14, colour, fill=True)
        png.draw_text(img, lx + 20, yy + 3, label, black)
    return img


def _nice_step(raw: float) -> float:
    """The 1-2-5 step at or above ``raw`` (axis ticks)."""
    if raw <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(raw))
    return float(next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw))


def write_chart(report: BenchReport, path: Union[str, Path]) -> Path:
    """:func:`render_chart` as a PNG file (atomically)."""
    from ..report import png

    return png.write_png(path, render_chart(report), text={"Software": "lumbar-edge bench"})


__all__ = ["format_report", "render_chart", "table", "write_chart", "write_json"]

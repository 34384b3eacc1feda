"""Benchmark harness of ``lumbar-edge bench``: stage timing, the runner, and its outputs.

Nothing here runs in production: the pipeline and the engines only carry an optional timer
(:attr:`lumbar_edge.backends.base.Engine.timer`, None by default).
"""
from .memory import host_peak, reset_host_peak
from .output import format_report, render_chart, table, write_chart, write_json
from .runner import BENCH_BACKENDS, BenchOptions, BenchReport, machine_info, parse_batches, run_bench, synth_study
from .timer import DEVICE_STAGES, STAGES, StageTimer, percentiles

__all__ = ["BENCH_BACKENDS", "BenchOptions", "BenchReport", "DEVICE_STAGES", "STAGES", "StageTimer", "format_report",
           "host_peak", "machine_info", "parse_batches", "percentiles", "render_chart", "reset_host_peak",
           "run_bench", "synth_study", "table", "write_chart", "write_json"]

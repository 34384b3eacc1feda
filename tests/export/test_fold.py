"""The exported network (export/fold.py): LumbarNet's computation with no concatenation before a
convolution; the coordinate channels as constant maps, BatchNorm folded in."""
import numpy as np
import onnx
import pytest
import torch

from conftest import SIZE, make_checkpoint

from lumbar_edge.export.errors import ExportError
from lumbar_edge.export.fold import CONCAT_CONV, ConcatConv, export_network
from lumbar_edge.export.int8 import CONCAT_CONV_MARK
from lumbar_edge.export.onnx_export import load_checkpoint_model


def _model(tmp_path, **options):
    model, _ = load_checkpoint_model(make_checkpoint(tmp_path / "best.pt", **options))
    return model


@pytest.mark.parametrize("coord_channels", [False, True])
@pytest.mark.parametrize("size", [(SIZE, SIZE), (96, 64)])
def test_the_export_network_computes_what_the_model_computes(tmp_path, coord_channels, size):
    model = _model(tmp_path, coord_channels=coord_channels)
    net = export_network(model, *size)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3, *size)).astype(np.float32))
    with torch.no_grad():
        expected, got = model(x), net(x)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        # Exact up to float rounding (BatchNorm and the ramps folded in float64).
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    # The coordinate channels became constant maps only where the model has them.
    maps = [m for m in net.modules() if isinstance(m, ConcatConv) and m.coord_map is not None]
    assert len(maps) == (5 if coord_channels else 0)  # four ASPP conv branches and the decoder


def test_a_concat_conv_splits_a_convolution_over_its_parts_and_folds_batchnorm():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(7, 4, 3, padding=2, dilation=2, bias=True)
    bn = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    a, b = torch.randn(2, 3, 9, 11), torch.randn(2, 2, 9, 11)
    ramps = torch.randn(1, 2, 9, 11)
    split = ConcatConv(conv, bn, [3, 2], ramps)
    with torch.no_grad():
        expected = bn(conv(torch.cat([a, b, ramps.expand(2, -1, -1, -1)], dim=1)))
        torch.testing.assert_close(split([a, b]), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ExportError, match="cannot split"):
        ConcatConv(conv, bn, [3, 3], ramps)


def test_the_onnx_graph_has_no_concatenation_before_a_convolution(tmp_path, slices):
    from lumbar_edge.export.onnx_export import export_checkpoint

    path = tmp_path / "model.onnx"
    report = export_checkpoint(make_checkpoint(tmp_path / "best.pt", coord_channels=True), path, inputs=slices)
    assert report.parity.ok
    graph = onnx.load(str(path)).graph
    concat_outputs = {o for n in graph.node if n.op_type == "Concat" for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "Conv" and concat_outputs & set(n.input)]
    assert not [n.name for n in graph.node if n.name.startswith("/coords")]
    sums = [n.name for n in graph.node if n.op_type == "Add" and CONCAT_CONV_MARK in n.name]
    # ASPP: 4 branch maps + 4 sums of 5 parts; decoder: 1 sum of 2 parts + its map.
    assert len(sums) == 10, sums
    assert f"/{CONCAT_CONV}/" == CONCAT_CONV_MARK


def test_int8_keeps_the_split_sums_in_float_and_quantizes_every_convolution(tmp_path, slices, calib):
    from lumbar_edge.export.int8 import DEFAULT_INT8_EXCLUDE_NODES, quantize_int8
    from lumbar_edge.export.onnx_export import export_checkpoint

    fp32, int8 = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    export_checkpoint(make_checkpoint(tmp_path / "best.pt", coord_channels=True), fp32, inputs=slices)
    report = quantize_int8(fp32, int8, calib)
    graph = onnx.load(str(int8)).graph
    quantized_inputs = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.input}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    adds = [n for n in graph.node if n.op_type == "Add"]
    sums = [n for n in adds if CONCAT_CONV_MARK in n.name]
    assert sums and all(n.name in report.excluded_nodes for n in sums)
    # Kept in float: the quantizer puts no QuantizeLinear on their outputs, whereas the residual
    # joins (quantized Adds) have one.
    assert not [n.name for n in sums if n.output[0] in quantized_inputs]
    residual = [n for n in adds if n.name.startswith("/backbone/")]
    assert residual and all(n.output[0] in quantized_inputs for n in residual)
    # Every convolution reads a dequantized input but the heads' float output layers and ASPP's
    # projection (its five parts: tiny, at stride 32).
    float_convs = sorted(n.name for n in graph.node if n.op_type == "Conv" and not dequantized & {n.input[0]})
    projection = [f"/aspp/{CONCAT_CONV}/parts.{i}/Conv" for i in range(5)]
    assert float_convs == sorted([*DEFAULT_INT8_EXCLUDE_NODES, *projection])


@pytest.mark.parametrize("options", [
    {"backbone": "resnet50", "output_stride": 16, "coord_channels": True},
    {"backbone": "resnet34", "output_stride": 32, "attention": False, "coord_channels": True},
    {"aspp_rates": (2,), "coord_channels": False, "low_level_channels": 8},
    {"output_stride": 32, "coord_channels": True, "in_channels": 1},
])
def test_every_model_config_exports_to_the_same_computation(options):
    from lumbar_edge.training.model import ModelConfig, build_model

    cfg = ModelConfig(**{"width": 8, "decoder_channels": 16, "low_level_channels": 8, "head_channels": 8, **options})
    torch.manual_seed(3)
    model = build_model(cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(2, cfg.in_channels, 96, 64)
    with torch.no_grad():
        expected, got = model(x), export_network(model, 96, 64)(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)

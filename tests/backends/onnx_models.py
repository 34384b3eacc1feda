"""Tiny ONNX models built with onnx.helper for the CPU engines' tests, and their numpy reference.

The model follows the model contract (image [N, C, H, W] -> heatmap, offset, severity at stride 4)
with arithmetic simple enough to recompute exactly in numpy.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lumbar_edge.bundle import Bundle
from lumbar_edge.preprocess import PreprocessConfig

C, H, W = 2, 16, 24


def weights(k, groups, c=C, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"wh": f(k, c, 4, 4), "bh": f(k), "wo": f(2 * k, c, 4, 4), "bo": f(2 * k),
            "ws": f(3 * groups, c, 1, 1), "bs": f(3 * groups)}


def build_model(path, k=3, groups=1, batch="N", c=C, h=H, w=W, names=("heatmap", "offset", "severity"), seed=0,
                node_prefix=""):
    """image [N, C, H, W] -> heatmap = Conv4x4/4, offset = Conv4x4/4, severity = Conv1x1(AveragePool4/4).
    ``node_prefix``: the nodes' names start with it (``/coords/`` mimics an export from before the fold)."""
    wts = weights(k, groups, c, seed)
    inits = [numpy_helper.from_array(v, name=n) for n, v in wts.items()]
    nodes = [
        helper.make_node("Conv", ["image", "wh", "bh"], [names[0]], kernel_shape=[4, 4], strides=[4, 4],
                         name=node_prefix + "ConvH"),
        helper.make_node("Conv", ["image", "wo", "bo"], [names[1]], kernel_shape=[4, 4], strides=[4, 4],
                         name=node_prefix + "ConvO"),
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4],
                         name=node_prefix + "Pool"),
        helper.make_node("Conv", ["pooled", "ws", "bs"], [names[2]], kernel_shape=[1, 1], name=node_prefix + "ConvS"),
    ]
    out_dims = lambda ch: [batch, ch, h // 4, w // 4]  # noqa: E731
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, c, h, w])],
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, out_dims(k)),
         helper.make_tensor_value_info(names[1], TensorProto.FLOAT, out_dims(2 * k)),
         helper.make_tensor_value_info(names[2], TensorProto.FLOAT, out_dims(3 * groups))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return wts


def reference(images, wts):
    """The same graph in numpy: stride-4 4x4 convolutions are sums over 4x4 blocks."""
    n, c, h, w = images.shape
    blocks = images.astype(np.float64).reshape(n, c, h // 4, 4, w // 4, 4)
    conv = lambda wk, b: np.einsum("nciajb,kcab->nkij", blocks, wk) + b[None, :, None, None]  # noqa: E731
    pooled = blocks.mean(axis=(3, 5))
    sev = np.einsum("ncij,kc->nkij", pooled, wts["ws"][:, :, 0, 0]) + wts["bs"][None, :, None, None]
    return {"heatmap": conv(wts["wh"], wts["bh"]), "offset": conv(wts["wo"], wts["bo"]), "severity": sev}


def images(n, seed=1, c=C, h=H, w=W):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def tiny_bundle_of(tmp_path, layout, models):
    """A Bundle object over a folder with the given ONNX files (the constructor does not verify:
    only the parts open_engine reads are needed)."""
    manifest = {"name": "tiny", "input": {"name": "image", "channels": C, "height": H, "width": W},
                "preprocess": PreprocessConfig(height=H, width=W, in_channels=C).to_dict(),
                "layout": layout.to_dict(), "models": [{"precision": p, "file": f} for p, f in models]}
    return Bundle(tmp_path, manifest)

"""The DeepLabV3+ / ResNet keypoint-and-severity network (training/model.py)."""
import json

import pytest

torch = pytest.importorskip("torch")

from lumbar_edge.errors import InputError  # noqa: E402
from lumbar_edge.training.model import (  # noqa: E402
    BACKBONES, OUTPUT_NAMES, ModelConfig, build_model, count_parameters, load_backbone_weights, output_size,
)

# Small widths keep every backbone fast on 2 CPU cores; the structure is the same as width 64.
SMALL = dict(width=16, decoder_channels=32, low_level_channels=16, head_channels=16)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("attention", [True, False])
def test_output_shapes_non_square_every_backbone(backbone, attention):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, attention=attention, num_keypoints=5, num_conditions=1, **SMALL))
    model.eval()
    with torch.no_grad():
        heatmap, offset, severity = model(torch.randn(2, 3, 96, 64))
    assert heatmap.shape == (2, 5, 24, 16)
    assert offset.shape == (2, 10, 24, 16)
    assert severity.shape == (2, 3, 24, 16)
    assert all(torch.isfinite(t).all() for t in (heatmap, offset, severity))


def test_sizes_not_divisible_by_16_and_other_channel_counts():
    model = build_model(ModelConfig(in_channels=5, num_keypoints=10, num_conditions=2, **SMALL)).eval()
    with torch.no_grad():
        heatmap, offset, severity = model(torch.randn(1, 5, 70, 50))
    h, w = output_size(70, 50)
    assert (h, w) == (18, 13)
    assert heatmap.shape == (1, 10, h, w) and offset.shape == (1, 20, h, w) and severity.shape == (1, 6, h, w)


def test_batch_of_one_trains():
    # The ASPP image-pooling branch has no BatchNorm, so train mode at batch 1 works.
    model = build_model(ModelConfig(**SMALL)).train()
    heatmap, offset, severity = model(torch.randn(1, 3, 64, 64))
    (heatmap.mean() + offset.mean() + severity.mean()).backward()
    assert model.backbone.conv1.weight.grad is not None


def test_heatmap_starts_at_the_centernet_prior():
    model = build_model(ModelConfig(**SMALL)).eval()
    with torch.no_grad():
        heatmap, _, _ = model(torch.randn(2, 3, 64, 64))
    probs = torch.sigmoid(heatmap)
    assert abs(probs.mean().item() - 0.1) < 0.01
    assert model.heatmap_head.out.bias.detach().allclose(torch.full((5,), -2.19))


def test_gradients_reach_every_part():
    torch.manual_seed(0)
    model = build_model(ModelConfig(attention=True, **SMALL)).train()
    heatmap, offset, severity = model(torch.randn(2, 3, 64, 64))
    (heatmap.square().mean() + offset.square().mean() + severity.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for p in (model.backbone.conv1.weight, model.backbone.layer4[-1].conv2.weight, model.aspp.branches[-1].conv.weight,
              model.low_proj[0].weight, model.heatmap_head.out.weight, model.severity_head.conv.weight,
              model.attention.pam.gamma, model.attention.cam.gamma):
        assert p.grad.abs().sum() > 0


def test_attention_switch_changes_the_network():
    with_att = build_model(ModelConfig(attention=True, **SMALL))
    without = build_model(ModelConfig(attention=False, **SMALL))
    assert count_parameters(with_att) > count_parameters(without)
    assert not any("attention" in n for n, _ in without.named_parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_traced_graph_has_no_baked_input_size():
    # Tracing records what ONNX export records: a graph traced at one size must give the eager
    # result at another size (no Python int taken from a shape).
    model = build_model(ModelConfig(**SMALL)).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64), check_trace=False)
        x = torch.randn(2, 3, 96, 80)
        for got, want in zip(traced(x), model(x)):
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5)
    assert OUTPUT_NAMES == ("heatmap", "offset", "severity")


def test_config_round_trip_and_validation():
    cfg = ModelConfig(backbone="resnet34", in_channels=2, num_keypoints=17, num_conditions=3, attention=False,
                      decoder_channels=256, aspp_rates=(3, 6, 9))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(data) == cfg
    assert build_model(data).config == cfg
    with pytest.raises(InputError, match="unknown backbone"):
        ModelConfig(backbone="resnet101")
    with pytest.raises(InputError, match="unknown model config keys: colour"):
        ModelConfig.from_dict({"colour": 1})
    with pytest.raises(InputError, match="num_keypoints"):
        ModelConfig(num_keypoints=0)


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_load_backbone_weights_torchvision_style_and_prefixed(tmp_path):
    torch.manual_seed(1)
    source = build_model(ModelConfig(**SMALL))
    state = dict(source.backbone.state_dict())
    state["fc.weight"] = torch.zeros(10, 128)  # an ImageNet classifier is ignored
    state["fc.bias"] = torch.zeros(10)
    plain = _save(state, tmp_path / "resnet18.pth")

    target = build_model(ModelConfig(**SMALL))
    loaded = load_backbone_weights(target, plain)
    assert "conv1.weight" in loaded and not any(k.startswith("fc.") for k in loaded)
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v), k

    # A whole-model checkpoint ({"model": state_dict} with backbone. prefixes) loads its backbone only.
    other = build_model(ModelConfig(**SMALL))
    whole = _save({"model": source.state_dict()}, tmp_path / "whole.pt")
    load_backbone_weights(other, whole)
    assert torch.equal(other.backbone.conv1.weight, source.backbone.conv1.weight)
    assert not torch.equal(other.heatmap_head.conv.weight, source.heatmap_head.conv.weight)


def test_load_backbone_weights_rejects_mismatches(tmp_path):
    r34 = _save(build_model(ModelConfig(backbone="resnet34", **SMALL)).backbone.state_dict(), tmp_path / "r34.pth")
    model = build_model(ModelConfig(backbone="resnet18", **SMALL))
    before = model.backbone.conv1.weight.clone()
    with pytest.raises(InputError, match="unexpected .*layer1.2"):
        load_backbone_weights(model, r34)
    assert torch.equal(model.backbone.conv1.weight, before)  # nothing half-loaded

    wide = _save(build_model(ModelConfig(backbone="resnet18", width=32)).backbone.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(InputError, match=r"shape mismatches .*conv1.weight: file \(32, 3, 7, 7\) vs model \(16, 3, 7, 7\)"):
        load_backbone_weights(model, wide)

    missing = dict(build_model(ModelConfig(**SMALL)).backbone.state_dict())
    del missing["layer4.1.bn2.running_var"]
    with pytest.raises(InputError, match="missing 1 tensors .*layer4.1.bn2.running_var"):
        load_backbone_weights(model, _save(missing, tmp_path / "missing.pth"))

    with pytest.raises(InputError, match="not found"):
        load_backbone_weights(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot read"):
        load_backbone_weights(model, garbage)
    with pytest.raises(InputError, match="state dict"):
        load_backbone_weights(model, _save([1, 2, 3], tmp_path / "list.pth"))


def test_three_channel_stem_adapts_to_other_input_channels_only_on_request(tmp_path):
    rgb = build_model(ModelConfig(in_channels=3, **SMALL))
    path = _save(rgb.backbone.state_dict(), tmp_path / "rgb.pth")
    five = build_model(ModelConfig(in_channels=5, **SMALL))
    with pytest.raises(InputError, match="conv1.weight: file \\(16, 3, 7, 7\\) vs model \\(16, 5, 7, 7\\)"):
        load_backbone_weights(five, path)
    load_backbone_weights(five, path, adapt_in_channels=True)
    w = five.backbone.conv1.weight
    expected = rgb.backbone.conv1.weight.mean(dim=1, keepdim=True) * (3 / 5)
    assert torch.allclose(w, expected.expand_as(w))
    # A constant image gives the same stem response as the RGB model on the same constant.
    with torch.no_grad():
        a = rgb.backbone.conv1(torch.ones(1, 3, 16, 16))
        b = five.backbone.conv1(torch.ones(1, 5, 16, 16))
    assert torch.allclose(a, b, atol=1e-5)

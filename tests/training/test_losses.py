"""Training losses (training/losses.py): focal/BCE heatmap, masked L1 offset, weighted severity CE."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lumbar_edge.errors import InputError  # noqa: E402
from lumbar_edge.training.losses import (  # noqa: E402
    KeypointLoss, KeypointTargets, bce_heatmap_loss, focal_heatmap_loss, gather_at_keypoints, identity_loss,
    keypoint_groups_for_view, offset_l1_loss, severity_loss,
)
from lumbar_edge.training.targets import collate_targets, make_targets  # noqa: E402

H, W = 8, 10


def _gaussian_targets(points, n=2, k=2, sigma=1.0):
    """Heatmaps [n, k, H, W] with a Gaussian peak (exactly 1) at each (iy, ix) in points[n][k] (None = absent)."""
    heat = torch.zeros(n, k, H, W)
    index = torch.zeros(n, k, dtype=torch.long)
    mask = torch.zeros(n, k)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    for i in range(n):
        for j in range(k):
            if points[i][j] is None:
                continue
            iy, ix = points[i][j]
            heat[i, j] = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
            index[i, j] = iy * W + ix
            mask[i, j] = 1.0
    return heat, index, mask


POINTS = [[(2, 3), (5, 7)], [(1, 1), None]]


def test_focal_is_near_zero_for_a_perfect_prediction_and_grows_as_it_worsens():
    heat, index, mask = _gaussian_targets(POINTS)
    peaks = heat.eq(1.0)
    perfect = torch.where(peaks, torch.tensor(30.0), torch.tensor(-30.0))
    as_target = torch.logit(heat.clamp(1e-4, 1 - 1e-4))       # predicts the Gaussian itself
    flat = torch.zeros_like(heat)                                # p = 0.5 everywhere
    shifted = torch.roll(perfect, shifts=1, dims=3)              # peaks one cell off
    losses = [focal_heatmap_loss(x, heat, index, mask).item() for x in (perfect, as_target, flat, shifted)]
    assert losses[0] < 1e-6
    assert losses[0] < losses[1] < losses[2] < losses[3]


def test_focal_matches_the_formula_on_a_tiny_map():
    # One keypoint at cell 0 of a 1x3 map; cell 1 has Gaussian value 0.5, cell 2 is background.
    logits = torch.tensor([[[[0.5, -1.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    p = [1 / (1 + math.exp(-v)) for v in (0.5, -1.0, 2.0)]
    expected = -((1 - p[0]) ** 2 * math.log(p[0])
                 + (1 - 0.5) ** 4 * p[1] ** 2 * math.log(1 - p[1])
                 + p[2] ** 2 * math.log(1 - p[2])) / 1.0
    got = focal_heatmap_loss(logits, target, torch.tensor([[0]]), torch.tensor([[1.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_focal_penalises_a_peak_for_an_absent_keypoint_and_skips_unsupervised_channels():
    heat, index, mask = _gaussian_targets(POINTS)
    base = torch.where(heat.eq(1.0), torch.tensor(30.0), torch.tensor(-30.0))
    ghost = base.clone()
    ghost[1, 1, 4, 4] = 30.0  # image 1 has no keypoint of type 1: a peak there is a false positive
    assert focal_heatmap_loss(ghost, heat, index, mask).item() > 1.0
    channel_mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # channel 1 of image 1 not supervised
    assert focal_heatmap_loss(ghost, heat, index, mask, channel_mask).item() < 1e-6


def test_bce_switch_prefers_the_target_and_honours_channel_mask():
    heat, _, _ = _gaussian_targets(POINTS)
    good = torch.logit(heat.clamp(1e-3, 1 - 1e-3))
    bad = -good
    assert bce_heatmap_loss(good, heat).item() < bce_heatmap_loss(bad, heat).item()
    cm = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mixed = good.clone()
    mixed[:, 1] = bad[:, 1]
    assert bce_heatmap_loss(mixed, heat, cm).item() == pytest.approx(bce_heatmap_loss(good, heat, cm).item())


def _offset_setup():
    _, index, mask = _gaussian_targets(POINTS)
    target = torch.tensor([[[0.25, 0.75], [0.5, 0.5]], [[0.0, 0.9], [0.3, 0.3]]])
    return index, mask, target


def test_offset_channels_are_dx_dy_per_keypoint_and_loss_counts_keypoint_cells_only():
    index, mask, target = _offset_setup()
    offset = torch.full((2, 4, H, W), 0.5)
    # |0.5-0.25| + |0.5-0.75| + 0 + 0 + |0.5-0| + |0.5-0.9| over 3 present keypoints x 2 coordinates
    expected = (0.25 + 0.25 + 0.5 + 0.4) / 6
    assert offset_l1_loss(offset, target, index, mask).item() == pytest.approx(expected)

    elsewhere = offset.clone()
    elsewhere[:, :, 0, 0] = 100.0        # not a keypoint cell of any present keypoint...
    elsewhere[1, 2:4] = 100.0            # ...and every cell of image 1's absent keypoint type 1
    assert offset_l1_loss(elsewhere, target, index, mask).item() == pytest.approx(expected)

    at_cell = offset.clone()
    at_cell[0, 3, 5, 7] = 1.5            # dy of keypoint 1 in image 0, at its cell (5, 7)
    assert offset_l1_loss(at_cell, target, index, mask).item() == pytest.approx(expected + 1.0 / 6)
    read = gather_at_keypoints(at_cell, index, 2)
    assert read[0, 1].tolist() == [0.5, 1.5]


def test_severity_class_weights_1_2_4():
    # Two keypoints in one image, cells 0 and 1, classes 0 and 2, same logits (2, 0, -1) at both.
    sev = torch.zeros(1, 3, 1, 2)
    sev[0, :, 0, 0] = torch.tensor([2.0, 0.0, -1.0])
    sev[0, :, 0, 1] = torch.tensor([2.0, 0.0, -1.0])
    index = torch.tensor([[0, 1]])
    mask = torch.ones(1, 2)
    target = torch.tensor([[0, 2]])
    groups = torch.tensor([0, 0])
    log_z = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0))
    nll0, nll2 = log_z - 2.0, log_z + 1.0
    weighted = severity_loss(sev, target, index, mask, groups, torch.tensor([1.0, 2.0, 4.0]))
    plain = severity_loss(sev, target, index, mask, groups, torch.tensor([1.0, 1.0, 1.0]))
    assert weighted.item() == pytest.approx((1 * nll0 + 4 * nll2) / 5, rel=1e-6)
    assert plain.item() == pytest.approx((nll0 + nll2) / 2, rel=1e-6)
    assert weighted.item() > plain.item()  # the wrongly graded severe case counts 4x


def test_missing_and_absent_severities_are_ignored():
    sev = torch.zeros(1, 3, 1, 3)
    sev[0, :, 0, 0] = torch.tensor([3.0, 0.0, 0.0])
    sev[0, :, 0, 1] = torch.tensor([-50.0, 50.0, -50.0])   # would be a huge loss for class 0 or 2
    index = torch.tensor([[0, 1, 2]])
    target = torch.tensor([[0, -1, 2]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])                  # keypoint 2 absent: its label is not read
    cw = torch.tensor([1.0, 2.0, 4.0])
    only_first = severity_loss(sev[..., :1], torch.tensor([[0]]), torch.tensor([[0]]), torch.ones(1, 1),
                               torch.tensor([0]), cw)
    got = severity_loss(sev, target, index, mask, torch.tensor([0, 0, 0]), cw)
    assert got.item() == pytest.approx(only_first.item())
    sev.requires_grad_(True)
    none = severity_loss(sev, torch.full((1, 3), -1), index, mask, torch.tensor([0, 0, 0]), cw)
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(sev.grad).all()


def test_keypoint_groups_select_the_severity_channels():
    # Two groups; group 1 (channels 3..5) says "severe" at the cell, group 0 says "normal".
    sev = torch.zeros(1, 6, 1, 1)
    sev[0, 0:3, 0, 0] = torch.tensor([5.0, 0.0, -5.0])
    sev[0, 3:6, 0, 0] = torch.tensor([-5.0, 0.0, 5.0])
    index, mask, target = torch.tensor([[0]]), torch.ones(1, 1), torch.tensor([[2]])
    cw = torch.tensor([1.0, 2.0, 4.0])
    reads_group1 = severity_loss(sev, target, index, mask, torch.tensor([1]), cw)
    reads_group0 = severity_loss(sev, target, index, mask, torch.tensor([0]), cw)
    assert reads_group1.item() < 0.01 < 5.0 < reads_group0.item()


def test_keypoint_loss_combines_parts_and_accepts_the_dataset_targets():
    torch.manual_seed(0)
    k, h, w = 5, 16, 16
    rng = np.random.default_rng(0)
    items = []
    for _ in range(2):
        points = rng.uniform(4, 60, size=(k, 2))
        present = np.array([1, 1, 1, 0, 1], dtype=bool)
        items.append(make_targets(points, present, rng.integers(-1, 3, size=k), np.ones(k), h, w))
    batch = collate_targets(items)  # numpy dict, as the data loader gives
    heat = torch.randn(2, k, h, w, requires_grad=True)
    off = torch.randn(2, 2 * k, h, w, requires_grad=True)
    sev = torch.randn(2, 3, h, w, requires_grad=True)

    full = KeypointLoss(keypoint_groups=keypoint_groups_for_view("sagittal_t2"))
    total, parts = full((heat, off, sev), batch)
    assert set(parts) == {"heatmap", "offset", "severity", "identity", "total"}
    assert total.item() == pytest.approx((parts["heatmap"] + parts["offset"] + parts["severity"]).item(), rel=1e-6)
    with_identity = KeypointLoss(keypoint_groups=keypoint_groups_for_view("sagittal_t2"), identity_weight=0.5)
    total3, parts3 = with_identity((heat, off, sev), batch)
    assert parts3["identity"].item() > 0
    assert total3.item() == pytest.approx((total + 0.5 * parts3["identity"]).item(), rel=1e-6)
    total.backward()
    assert heat.grad.abs().sum() > 0 and off.grad.abs().sum() > 0 and sev.grad.abs().sum() > 0

    no_offset = KeypointLoss(offset=False, heatmap_weight=2.0, severity_weight=0.5)
    total2, parts2 = no_offset((heat, off, sev), KeypointTargets.from_mapping(batch))
    assert total2.item() == pytest.approx((2.0 * parts2["heatmap"] + 0.5 * parts2["severity"]).item(), rel=1e-6)
    bce_total, bce_parts = KeypointLoss(heatmap="bce")((heat, off, sev), batch)
    assert bce_parts["heatmap"].item() != pytest.approx(parts["heatmap"].item())


def test_keypoint_loss_rejects_bad_settings():
    with pytest.raises(InputError, match="focal"):
        KeypointLoss(heatmap="mse")
    with pytest.raises(InputError, match="unknown view"):
        keypoint_groups_for_view("coronal")
    assert keypoint_groups_for_view("axial_t2") == (0, 0)
    heat, index, mask = _gaussian_targets(POINTS)
    targets = {"heatmap": heat, "keypoint_index": index, "keypoint_mask": mask,
               "offset": torch.zeros(2, 2, 2), "severity": torch.zeros(2, 2, dtype=torch.long)}
    outputs = (torch.zeros(2, 2, H, W), torch.zeros(2, 4, H, W), torch.zeros(2, 3, H, W))
    with pytest.raises(InputError, match="keypoint_groups has 3 entries"):
        KeypointLoss(keypoint_groups=[0, 0, 0])(outputs, targets)
    with pytest.raises(InputError, match="out of range"):
        KeypointLoss(keypoint_groups=[0, 1])(outputs, targets)
    with pytest.raises(InputError, match="lack severity"):
        KeypointLoss()(outputs, {k: v for k, v in targets.items() if k != "severity"})


def test_a_soft_positive_learns_a_score_that_falls_with_its_weight():
    # One cell, target peak w (the through-plane weight): the loss over p has its minimum at a
    # score that rises with w, from 0 (absent) to 1 (on the labelled slice).
    grid = torch.linspace(-8.0, 8.0, 3201)
    best = []
    for w in (0.0, 0.15, 0.4, 0.8, 1.0):
        losses = [focal_heatmap_loss(z.view(1, 1, 1, 1), torch.full((1, 1, 1, 1), w), torch.zeros(1, 1, dtype=torch.long),
                                     torch.full((1, 1), w)).item() for z in grid]
        best.append(torch.sigmoid(grid[int(np.argmin(losses))]).item())
    assert best[0] < 0.01 and best[-1] > 0.99
    assert all(a < b for a, b in zip(best, best[1:])), best


def test_soft_positives_weight_offset_and_severity_by_their_mask():
    offset = torch.zeros(1, 4, 1, 2)
    index = torch.zeros(1, 2, dtype=torch.long)
    target = torch.tensor([[[0.5, 0.5], [0.1, 0.1]]])
    # Keypoint 0 (weight 1) is off by 0.5 in both axes, keypoint 1 (weight 0.25) by 0.1.
    got = offset_l1_loss(offset, target, index, torch.tensor([[1.0, 0.25]]))
    assert got.item() == pytest.approx((1.0 * 0.5 * 2 + 0.25 * 0.1 * 2) / (2 * 1.25))
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0] = 5.0  # confident normal/mild everywhere
    sev = torch.tensor([[0, 2]])
    groups = torch.tensor([0, 0])
    weights = torch.tensor([1.0, 2.0, 4.0])
    nll = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0]), 0)
    got = severity_loss(logits, sev, index, torch.tensor([[1.0, 0.25]]), groups, weights)
    expected = (1.0 * 1.0 * nll[0] + 0.25 * 4.0 * nll[2]) / (1.0 * 1.0 + 0.25 * 4.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_identity_loss_asks_the_keypoints_own_channel_to_win_among_its_views_channels():
    # Two keypoint types of one view and a third channel of another view; keypoint 0 at cell 1,
    # keypoint 1 at cell 2, keypoint 2 absent.
    logits = torch.full((1, 3, 1, 4), -3.0)
    logits[0, 0, 0, 1] = 2.0   # channel 0 fires at its own keypoint...
    logits[0, 1, 0, 1] = 1.0   # ...and channel 1 a little there too
    logits[0, 1, 0, 2] = 4.0
    logits[0, 2, 0, 2] = 9.0   # another view's channel: not a competitor
    index = torch.tensor([[1, 2, 0]])
    mask = torch.tensor([[1.0, 0.5, 0.0]])
    view = torch.tensor([[1.0, 1.0, 0.0]])
    got = identity_loss(logits, index, mask, view)
    l0 = -torch.log_softmax(torch.tensor([2.0, 1.0]), 0)[0]
    l1 = -torch.log_softmax(torch.tensor([-3.0, 4.0]), 0)[1]
    assert got.item() == pytest.approx(((1.0 * l0 + 0.5 * l1) / 1.5).item(), rel=1e-6)
    # Swapping the channels' answers makes it worse; no keypoint at all gives 0.
    assert identity_loss(logits[:, [1, 0, 2]], index, mask, view).item() > got.item()
    assert identity_loss(logits, index, torch.zeros(1, 3), view).item() == 0.0

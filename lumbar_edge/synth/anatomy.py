"""The lumbar-spine phantom: one 3D anatomy per study, defined once in patient space.

The anatomy is a list of painted layers (:mod:`.shapes`) in the spine's curved coordinates
``(x, s, d)`` (see :mod:`.shapes`), placed in DICOM patient space (LPS, mm) by a lordotic arc of
radius ``lordosis_radius`` and a rigid pose. Every series samples the same layers on its own slice
planes, so sagittal and axial images show the same spine and the label points (also defined in
spine coordinates) map exactly to pixels.

Contents: T12-L5 vertebral bodies (cortex and marrow), the sacrum (S1-S4, alae), the six discs
(annulus, nucleus; degenerated discs are darker on T2 and thinner), pedicles, laminae, spinous and
transverse processes, facet joints; the spinal canal (epidural fat), the posterior longitudinal
ligament and disc bulge, the ligamentum flavum, the thecal sac (CSF) with the cord ending at L1
and the cauda equina; per level and side the neural foramen (fat, exiting root) and the lateral
recess (fat, traversing root); psoas and paraspinal muscles, aorta and IVC, abdominal viscera and
subcutaneous fat.

Stenosis grades act locally through the narrowing factor (remaining fraction of normal space):
canal stenosis pinches the thecal sac's AP diameter at the disc (disc bulge in front, ligamentum
flavum behind); foraminal narrowing shrinks the foraminal fat around its centre and flattens the
root; subarticular stenosis shrinks the lateral-recess fat and indents the sac on that side.
Each label point stays at the centre of the (narrowed) space, so one pixel there reads the same
tissue whatever the grade; the grade shows in the size of the space around it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from ..labels import LEVELS
from .shapes import Capsule, Layer, ProfileTube, SuperEllipsoid

#: Signal of each tissue on (T1, T2, STIR), before per-study jitter (CSF on T2 ~ 1).
TISSUES: Dict[str, Tuple[float, float, float]] = {
    "fat": (0.92, 0.70, 0.07),
    "epidural_fat": (0.86, 0.64, 0.08),
    "muscle": (0.36, 0.25, 0.27),
    "viscera": (0.46, 0.40, 0.33),
    "vessel": (0.05, 0.06, 0.06),
    "cortex": (0.09, 0.07, 0.06),
    "marrow": (0.62, 0.44, 0.17),
    "annulus": (0.30, 0.21, 0.22),
    "nucleus": (0.37, 0.78, 0.72),
    "ligament": (0.15, 0.10, 0.10),
    "fibrous": (0.27, 0.17, 0.19),
    "joint": (0.12, 0.50, 0.52),
    "csf": (0.12, 0.96, 0.92),
    "cord": (0.42, 0.36, 0.38),
    "nerve": (0.34, 0.30, 0.42),
}

#: Vertebrae drawn as lumbar-type vertebrae, top to bottom, and the discs below each.
_VERTEBRAE = ("T12", "L1", "L2", "L3", "L4", "L5")
_BODY_HEIGHT = (23.0, 25.0, 26.0, 27.0, 27.0, 26.5)
_BODY_HALF_WIDTH = (19.0, 20.0, 21.0, 22.5, 23.5, 25.0)
_BODY_HALF_DEPTH = (13.5, 14.5, 15.0, 15.5, 16.0, 16.5)
#: Discs T12/L1, L1/L2, ..., L5/S1.
_DISC_HEIGHT = (7.5, 8.5, 9.5, 10.5, 11.0, 10.0)


@dataclass(frozen=True)
class Pose:
    """Spine frame -> patient: ``P = rotation @ q + translation`` (q = lateral, AP, superior)."""

    rotation: np.ndarray
    translation: np.ndarray


@dataclass(frozen=True)
class Anatomy:
    """One study's phantom.

    ``layers`` are painted in order; ``keypoints[(condition, level)]`` are label points in spine
    coordinates; ``discs[level]`` the disc centre (0, s, 0) of each of the five graded levels;
    ``texture`` plane waves ``(k (3,), phase, amplitude)`` in patient space (tissue texture);
    ``params`` the sampled sizes (for the truth file).
    """

    lordosis_radius: float
    pose: Pose
    layers: Tuple[Layer, ...]
    keypoints: Dict[Tuple[str, str], Tuple[float, float, float]]
    discs: Dict[str, Tuple[float, float, float]]
    texture: Tuple[Tuple[Tuple[float, float, float], float, float], ...]
    params: Dict[str, float]

    def to_frame(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient points ``(..., 3)`` -> the uncurved spine frame ``(lateral, superior, posterior)``."""
        q = (np.asarray(points, dtype=np.float64) - self.pose.translation) @ self.pose.rotation
        return q[..., 0], q[..., 2], q[..., 1]

    def to_spine(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient points ``(..., 3)`` (LPS mm) -> spine coordinates ``(x, s, d)`` arrays."""
        return self.curve(*self.to_frame(points))

    def curve(self, a: np.ndarray, c: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncurved frame ``(lateral, superior, posterior)`` -> spine coordinates ``(x, s, d)``."""
        r0 = self.lordosis_radius
        # The arc's centre of curvature lies behind the spine (lordosis): polar coordinates
        # around it straighten the curve.
        theta = np.arctan2(c, r0 - b)
        s = r0 * theta
        d = r0 - np.hypot(r0 - b, c)
        return a, s, d

    def to_patient(self, x: float, s: float, d: float) -> np.ndarray:
        """Spine coordinates of one point -> patient (LPS mm), shape (3,)."""
        r0 = self.lordosis_radius
        theta = s / r0
        q = np.array([x, r0 - (r0 - d) * math.cos(theta), (r0 - d) * math.sin(theta)])
        return self.pose.rotation @ q + self.pose.translation

    def keypoint_patient(self, key: Tuple[str, str]) -> np.ndarray:
        return self.to_patient(*self.keypoints[key])


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i] = c
    m[j, j] = c
    m[i, j] = -s
    m[j, i] = s
    return m


def rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    """Rotation about z, then y, then x (degrees), as one matrix ``Rz @ Ry @ Rx``."""
    return _rot(2, math.radians(az_deg)) @ _rot(1, math.radians(ay_deg)) @ _rot(0, math.radians(ax_deg))


def _jitter_tissues(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    # Per-study contrast: each tissue's signal varies a little, independently per sequence.
    return {name: np.asarray(v) * np.exp(rng.normal(0.0, 0.07, 3)) for name, v in TISSUES.items()}


def build_anatomy(rng: np.random.Generator, narrowing: Dict[Tuple[str, str], float],
                  degeneration: Dict[str, float]) -> Anatomy:
    """Sample one study's anatomy.

    ``narrowing[(condition, level)]`` is the remaining fraction of normal space (1 = normal,
    ~0.3 = severe) for all 25 condition-levels; ``degeneration[level]`` in [0, 1] darkens and
    thins that disc. Randomness (sizes, pose, contrast, texture) comes from ``rng`` only.
    """
    tissue = _jitter_tissues(rng)
    layers: List[Layer] = []

    def paint(shape, name: str, values=None, frame: str = "curved") -> None:
        v = tissue[name] if values is None else values
        layers.append(Layer(shape, name, (float(v[0]), float(v[1]), float(v[2])), frame))

    sc = float(rng.uniform(0.87, 1.15))
    canal_factor = float(rng.uniform(0.88, 1.14))
    lordosis = float(rng.uniform(280.0, 450.0) * sc)

    # --- levels along s: top of T12 downwards, then shifted so the L3 body centre is s = 0.
    hb = [h * sc * rng.uniform(0.95, 1.05) for h in _BODY_HEIGHT]
    disc_deg = [0.15] + [degeneration[lv] for lv in LEVELS]
    hd = [h * sc * rng.uniform(0.93, 1.07) * (1.0 - 0.35 * g) for h, g in zip(_DISC_HEIGHT, disc_deg)]
    W = [w * sc * rng.uniform(0.96, 1.04) for w in _BODY_HALF_WIDTH]
    D = [dd * sc * rng.uniform(0.96, 1.04) for dd in _BODY_HALF_DEPTH]
    body_s, disc_s = [], []
    pos = 0.0
    for k in range(len(_VERTEBRAE)):
        body_s.append(pos - hb[k] / 2)
        pos -= hb[k]
        disc_s.append(pos - hd[k] / 2)
        pos -= hd[k]
    shift = -body_s[3]
    body_s = [v + shift for v in body_s]
    disc_s = [v + shift for v in disc_s]
    s1_height = 24.0 * sc
    s1_centre = disc_s[-1] - hd[-1] / 2 - s1_height / 2
    s_top = body_s[0] + hb[0] / 2 + 50.0
    s_bottom = s1_centre - 75.0 * sc

    a_canal = 16.5 * sc * canal_factor  # bony canal AP diameter
    w_canal = 11.5 * sc * rng.uniform(0.93, 1.07)
    a_sac = a_canal - 3.5 * sc
    w_sac = w_canal - 2.5 * sc
    fat_post = float(rng.uniform(8.0, 35.0))
    fat_ant = float(rng.uniform(8.0, 30.0))

    # Sacral segments S1-S4: smaller and bending backwards (sacral kyphosis).
    sac_h = [24.0 * sc, 18.0 * sc, 15.0 * sc, 12.0 * sc]
    sac_w = [24.0 * sc, 20.0 * sc, 16.0 * sc, 12.0 * sc]
    sac_dd = [16.0 * sc, 13.0 * sc, 10.0 * sc, 8.0 * sc]
    sac_off = [2.0 * sc, 8.0 * sc, 15.0 * sc, 22.0 * sc]
    sac_s = [s1_centre]
    for i in range(1, 4):
        sac_s.append(sac_s[-1] - sac_h[i - 1] / 2 - 2.0 * sc - sac_h[i] / 2)

    # Canal anterior wall: just behind the vertebral bodies, following the sacrum down.
    wall_s = [s_top] + body_s + sac_s[:3]
    wall_d = [D[0] + 2.0] + [dd + 2.0 for dd in D] + [sac_dd[i] + sac_off[i] + 2.0 for i in range(3)]
    order = np.argsort(wall_s)
    wall_s = np.asarray(wall_s)[order]
    wall_d = np.asarray(wall_d)[order]
    grid = np.arange(s_bottom, s_top + 1.0, 1.0)
    d_ant0 = np.interp(grid, wall_s, wall_d)
    # The canal tapers inside the sacrum.
    taper = np.clip((grid - sac_s[3]) / max(sac_s[0] - sac_s[3], 1e-6), 0.35, 1.0)

    graded = list(zip(LEVELS, disc_s[1:], hd[1:]))

    def bump(centre: float, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * ((grid - centre) / sigma) ** 2)

    e_ant = np.zeros_like(grid)
    e_post = np.zeros_like(grid)
    lf = np.zeros_like(grid)
    w_left = np.full_like(grid, w_sac)
    w_right = np.full_like(grid, w_sac)
    for lv, sd_, h in graded:
        sigma = 0.5 * h + 1.5 * sc
        g = bump(sd_, sigma)
        loss = (1.0 - narrowing[("spinal_canal_stenosis", lv)]) * a_sac
        e_ant += 0.45 * loss * g
        e_post += 0.55 * loss * g
        lf += 2.2 * sc * bump(sd_, 0.5 * h + 3.0 * sc)
        canal_w = 1.0 - 0.2 * (1.0 - narrowing[("spinal_canal_stenosis", lv)]) * g
        gs = bump(sd_, 0.5 * h + 2.0 * sc)
        w_left *= canal_w * (1.0 - 0.3 * (1.0 - narrowing[("left_subarticular_stenosis", lv)]) * gs)
        w_right *= canal_w * (1.0 - 0.3 * (1.0 - narrowing[("right_subarticular_stenosis", lv)]) * gs)
    e_ant = np.maximum(e_ant, -1.0)
    e_post = np.maximum(e_post, -1.0)

    sac_lo = d_ant0 + 1.0 * sc + e_ant
    sac_hi = d_ant0 + 1.0 * sc + a_sac * taper - e_post
    sac_end = sac_s[1] - 0.3 * sac_h[1]  # the dural sac ends at S2
    in_sac = grid >= sac_end
    sac_mid = 0.5 * (sac_lo + sac_hi)
    sac_half = 0.5 * (sac_hi - sac_lo)

    def tube(xc, w_neg, w_pos, lo, hi, mask=None, p=2.0) -> ProfileTube:
        m = slice(None) if mask is None else mask
        k = grid[m]

        def arr(v):
            return tuple(float(t) for t in np.broadcast_to(np.asarray(v, dtype=np.float64), grid.shape)[m])

        return ProfileTube(tuple(float(t) for t in k), arr(xc), arr(w_neg), arr(w_pos), arr(lo), arr(hi), p=p)

    # --- body, subcutaneous fat, muscles, viscera.
    d_mid_body = D[3]
    half_width_body = float(rng.uniform(130.0, 165.0) * sc)
    skin_post = d_mid_body + 2.0 + a_canal + 52.0 * sc + fat_post
    skin_ant = -(d_mid_body + 85.0 * sc + rng.uniform(0.0, 45.0)) - fat_ant
    ends = (s_bottom - 80.0, s_top + 80.0)
    body_knots = ends
    paint(ProfileTube(body_knots, (0.0, 0.0), (half_width_body,) * 2, (half_width_body,) * 2,
                      (skin_ant,) * 2, (skin_post,) * 2, p=2.4), "fat", frame="straight")
    wall = 10.0 * sc
    paint(ProfileTube(body_knots, (0.0, 0.0), (half_width_body - fat_ant,) * 2, (half_width_body - fat_ant,) * 2,
                      (skin_ant + fat_ant,) * 2, (-d_mid_body * 0.6,) * 2, p=2.4), "muscle", frame="straight")
    paint(ProfileTube(body_knots, (0.0, 0.0), (half_width_body - fat_ant - wall,) * 2,
                      (half_width_body - fat_ant - wall,) * 2, (skin_ant + fat_ant + wall,) * 2,
                      (-d_mid_body * 0.6,) * 2, p=2.4), "viscera", frame="straight")
    para_lo = d_mid_body + 2.0 * sc
    para_hi = skin_post - fat_post - 2.0
    for side in (-1.0, 1.0):
        # Erector spinae and multifidus: from the spinous processes out past the transverse processes.
        cx = side * (w_canal + 18.0 * sc)
        inner, outer = w_canal + 16.5 * sc, 28.0 * sc
        paint(SuperEllipsoid.make((cx, 0.0, 0.5 * (para_lo + para_hi)), (inner if side > 0 else outer, 400.0,
                                  0.5 * (para_hi - para_lo)), p=2.2, q=8.0, rx_pos=outer if side > 0 else inner),
              "muscle")
        # Psoas: grows from L1 down to the pelvis, beside the bodies.
        knots = (sac_s[1], body_s[5], body_s[1], body_s[1] + 15.0)
        widths = (22.0 * sc, 20.0 * sc, 7.0 * sc, 3.0 * sc)
        xs = tuple(side * (W[min(3, 5)] + w) for w in (18.0 * sc, 16.0 * sc, 4.0 * sc, 2.0 * sc))
        depth = (17.0 * sc, 15.0 * sc, 7.0 * sc, 3.0 * sc)
        paint(ProfileTube(knots, xs, widths, widths, tuple(-2.0 * sc - v for v in depth),
                          tuple(-2.0 * sc + v for v in depth)), "muscle")
    # Interspinous ligaments and the medial multifidus between the spinous processes.
    paint(ProfileTube(ends, (0.0, 0.0), (5.0 * sc,) * 2, (5.0 * sc,) * 2, (d_mid_body + a_canal,) * 2,
                      (para_hi,) * 2, p=3.0), "muscle")
    # Aorta (left) dividing at L4 into the iliac arteries; IVC (right).
    ao_d = -D[3] - 14.0 * sc
    paint(Capsule((10.0 * sc, s_top + 40.0, ao_d), (10.0 * sc, body_s[4], ao_d), 8.5 * sc, 8.0 * sc), "vessel")
    for side in (-1.0, 1.0):
        paint(Capsule((10.0 * sc + side * 2.0, body_s[4], ao_d), (side * 45.0 * sc, sac_s[1], ao_d + 5.0),
                      5.5 * sc, 5.0 * sc), "vessel")
    paint(Capsule((-20.0 * sc, s_top + 40.0, ao_d + 2.0), (-22.0 * sc, body_s[5], ao_d + 2.0),
                  10.0 * sc, 9.0 * sc), "vessel")

    def bone(shape_outer: SuperEllipsoid, inset: float) -> None:
        paint(shape_outer, "cortex")
        o = shape_outer
        paint(SuperEllipsoid(o.cx, o.cs, o.cd, max(o.rx_neg - inset, 0.5), max(o.rx_pos - inset, 0.5),
                             max(o.rs - inset, 0.5), max(o.rd_neg - inset, 0.5), max(o.rd_pos - inset, 0.5),
                             o.p, o.q, o.tilt), "marrow")

    inset = 1.3 * sc
    canal_back = [D[k] + 2.0 + a_canal for k in range(6)]
    # --- posterior elements of T12-L5.
    for k in range(6):
        sk, h = body_s[k], hb[k]
        for side in (-1.0, 1.0):
            bone(SuperEllipsoid.make((side * (w_canal + 22.0 * sc), sk + 0.1 * h, D[k] + 4.0 * sc),
                                     (16.0 * sc, 4.5 * sc, 4.0 * sc)), 1.0 * sc)
            ped_len = 0.5 * (a_canal + 6.0 * sc)
            bone(SuperEllipsoid.make((side * (w_canal + 3.2 * sc), sk + 0.2 * h, D[k] - 3.0 * sc + ped_len),
                                     (4.0 * sc, 0.26 * h, ped_len), p=2.0, q=2.5), 1.1 * sc)
        bone(SuperEllipsoid.make((0.0, sk - 0.05 * h, canal_back[k] + 3.5 * sc),
                                 (w_canal + 7.0 * sc, 0.42 * h, 3.5 * sc), p=4.0, q=3.0, tilt=0.35), 1.1 * sc)
        bone(SuperEllipsoid.make((0.0, sk - 0.15 * h, canal_back[k] + 23.0 * sc),
                                 (3.2 * sc, 0.36 * h, 20.0 * sc), p=2.0, q=3.0, tilt=0.2), 1.0 * sc)
    # Facet joints at each disc (inferior process of the vertebra above on the superior one below).
    for i in range(6):
        ds_, dd = disc_s[i], 0.5 * (D[i] + D[min(i + 1, 5)])
        hh = 0.35 * (hb[i] + hd[i])
        for side in (-1.0, 1.0):
            centre = (side * (w_canal + 4.5 * sc), ds_ + 2.0 * sc, dd + 2.0 + 0.85 * a_canal + 2.5 * sc)
            bone(SuperEllipsoid.make(centre, (6.5 * sc, hh, 6.5 * sc), tilt=0.25), 1.2 * sc)
            paint(SuperEllipsoid.make((centre[0] + side * 0.8 * sc, centre[1], centre[2]),
                                      (0.7 * sc, 0.8 * hh, 5.0 * sc), tilt=0.25), "joint")
    # --- sacrum: posterior plate, alae, segments.
    plate_d = sac_dd[1] + sac_off[1] + 2.0 + 0.8 * a_canal + 8.0 * sc
    bone(SuperEllipsoid.make((0.0, sac_s[1], plate_d), (w_canal + 12.0 * sc, 32.0 * sc, 5.0 * sc),
                             p=3.0, tilt=0.45), 1.2 * sc)
    for side in (-1.0, 1.0):
        bone(SuperEllipsoid.make((side * (sac_w[0] + 14.0 * sc), sac_s[0] - 4.0 * sc, 6.0 * sc),
                                 (24.0 * sc, 16.0 * sc, 17.0 * sc), p=2.5), 1.3 * sc)
    for i in range(4):
        bone(SuperEllipsoid.make((0.0, sac_s[i], sac_off[i]), (sac_w[i], sac_h[i] / 2, sac_dd[i]),
                                 p=3.0, q=6.0, tilt=0.12 * (i + 1)), inset)
        if i:
            paint(SuperEllipsoid.make((0.0, sac_s[i] + sac_h[i] / 2 + 1.0 * sc, sac_off[i]),
                                      (0.8 * sac_w[i], 0.9 * sc, 0.8 * sac_dd[i]), p=3.0,
                                      tilt=0.12 * (i + 1)), "annulus")
    # --- vertebral bodies and discs.
    for k in range(6):
        bone(SuperEllipsoid.make((0.0, body_s[k], 0.0), (W[k], hb[k] / 2, D[k]), p=3.0, q=8.0), inset)
    for i in range(6):
        wk = 0.5 * (W[i] + W[min(i + 1, 5)]) + 1.0 * sc
        dk = 0.5 * (D[i] + D[min(i + 1, 5)]) + 1.2 * sc
        paint(SuperEllipsoid.make((0.0, disc_s[i], 0.0), (wk, hd[i] / 2 + 0.6 * sc, dk), p=3.0, q=4.0), "annulus")
        g = disc_deg[i]
        nucleus = tissue["nucleus"] * np.array([1.0, 1.0 - 0.65 * g, 1.0 - 0.65 * g]) + \
            tissue["annulus"] * np.array([0.0, 0.65 * g, 0.65 * g])
        paint(SuperEllipsoid.make((0.0, disc_s[i], 1.5 * sc), (0.55 * wk, 0.32 * hd[i] * (1 - 0.3 * g), 0.5 * dk)),
              "nucleus", nucleus)

    # --- spinal canal: epidural fat, carving the posterior elements.
    canal_hi = d_ant0 + a_canal * taper
    paint(tube(0.0, w_canal * taper, w_canal * taper, d_ant0 - 0.2, canal_hi, p=3.0), "epidural_fat")

    keypoints: Dict[Tuple[str, str], Tuple[float, float, float]] = {}
    # --- neural foramina: fibrous frame, fat (shrinks with the grade), exiting root.
    for li, (lv, ds_, h) in enumerate(graded):
        upper = li + 1  # index into body_s / hb of the vertebra above this disc
        dd = 0.5 * (D[upper] + D[min(upper + 1, 5)])
        xf = w_canal + 5.0 * sc
        sf = ds_ + 0.22 * hb[upper]
        df = dd + 1.5 * sc
        rx, rs, rd = 6.0 * sc, 0.3 * (hb[upper] + h), 5.5 * sc
        for side, name in ((1.0, "left"), (-1.0, "right")):
            f = narrowing[(f"{name}_neural_foraminal_narrowing", lv)]
            cx = side * xf
            paint(SuperEllipsoid.make((cx, sf, df), (rx + 1.5 * sc, rs + 2.0 * sc, rd + 2.5 * sc)), "fibrous")
            rs_f = rs * (0.55 + 0.45 * f)
            # As for the recess, ~2 mm of fat stays around the centre when severe.
            paint(SuperEllipsoid.make((cx, sf, df), (rx * (0.75 + 0.25 * f), rs_f, rd * (0.15 + 0.85 * f))), "fat")
            root_s = sf + 0.42 * rs_f
            root_r = 2.3 * sc
            paint(SuperEllipsoid.make((cx, root_s, df), (rx + 3.0 * sc, root_r, root_r * (0.45 + 0.55 * f))), "nerve")
            sac_i = int(np.clip(np.searchsorted(grid, root_s + 5.0), 0, grid.size - 1))
            paint(Capsule((side * (w_sac - 1.0 * sc), root_s + 5.0 * sc, float(sac_mid[sac_i])),
                          (side * (xf - 4.0 * sc), root_s, df), 1.5 * sc, 1.8 * sc), "nerve")
            paint(Capsule((side * (xf + 4.0 * sc), root_s, df), (side * (xf + 24.0 * sc), root_s - 8.0 * sc, df - 8.0 * sc),
                          2.0 * sc, 2.4 * sc), "nerve")
            keypoints[(f"{name}_neural_foraminal_narrowing", lv)] = (cx, sf, df)

    # --- lateral recesses: frame (superior articular process / flavum), fat, traversing root.
    for lv, ds_, h in graded:
        i = int(np.clip(np.searchsorted(grid, ds_), 0, grid.size - 1))
        xr = w_sac + 0.3 * sc
        dr = float(d_ant0[i]) + 0.3 * a_canal
        for side, name in ((1.0, "left"), (-1.0, "right")):
            f = narrowing[(f"{name}_subarticular_stenosis", lv)]
            paint(SuperEllipsoid.make((side * (xr + 1.8 * sc), ds_, dr + 2.2 * sc), (5.2 * sc, 8.0 * sc, 5.2 * sc)),
                  "ligament")
            # The space keeps ~1.5 mm around the label point even when severe, so the point
            # itself stays in it: the grade shows in the size, not in the pixel at the point.
            fr = 0.2 + 0.8 * f
            paint(SuperEllipsoid.make((side * xr, ds_, dr), (4.0 * sc * fr, 7.0 * sc, 3.4 * sc * fr)), "epidural_fat")
            paint(Capsule((side * (xr - 1.2 * sc), ds_ + 10.0 * sc, dr - 0.6 * sc),
                          (side * (xr - 0.8 * sc), ds_ - 12.0 * sc, dr - 0.4 * sc),
                          1.2 * sc * (0.6 + 0.4 * f), 1.2 * sc * (0.6 + 0.4 * f)), "nerve")
            keypoints[(f"{name}_subarticular_stenosis", lv)] = (side * xr, ds_, dr)

    # --- posterior longitudinal ligament + disc bulge in front, ligamentum flavum behind.
    paint(tube(0.0, w_sac + 2.0 * sc, w_sac + 2.0 * sc, d_ant0 - 1.5 * sc, d_ant0 + 0.8 * sc + e_ant), "ligament")
    lf_lo = canal_hi - lf - e_post
    paint(tube(0.0, w_canal * taper, w_canal * taper, lf_lo, canal_hi + 1.0, mask=lf + e_post > 0.05, p=4.0),
          "ligament")

    # --- thecal sac, cord (to mid L1), cauda equina.
    paint(tube(0.0, w_right, w_left, sac_lo, sac_hi, mask=in_sac), "csf")
    conus = body_s[1]
    cord_mask = grid >= conus
    taper_c = np.clip((grid - conus) / 15.0, 0.15, 1.0)
    paint(tube(0.0, 4.0 * sc * taper_c, 4.0 * sc * taper_c, sac_mid - 3.5 * sc * taper_c,
               sac_mid + 3.5 * sc * taper_c, mask=cord_mask), "cord")
    root_mask = in_sac & (grid < conus + 5.0)
    for fx, fd in ((-0.5, 0.3), (0.5, 0.3), (-0.28, 0.55), (0.28, 0.55)):
        w_side = w_right if fx < 0 else w_left
        rr = np.minimum(0.8 * sc, 0.25 * np.maximum(sac_half, 0.4))
        cx = fx * w_side
        cd = sac_mid + fd * sac_half
        paint(tube(cx, rr, rr, cd - rr, cd + rr, mask=root_mask), "nerve")

    for lv, ds_, h in graded:
        i = int(np.clip(np.searchsorted(grid, ds_), 0, grid.size - 1))
        keypoints[("spinal_canal_stenosis", lv)] = (0.0, ds_, float(sac_mid[i]))
    discs = {lv: (0.0, ds_, 0.0) for lv, ds_, _ in graded}

    pose = Pose(rotation=rotation(rng.uniform(-6.0, 6.0), float(np.clip(rng.normal(0.0, 1.5), -3.0, 3.0)),
                                  float(np.clip(rng.normal(0.0, 2.0), -4.0, 4.0))),
                translation=np.array([rng.uniform(-6.0, 6.0), rng.uniform(-15.0, 15.0), rng.uniform(-40.0, 40.0)]))
    texture = []
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = direction * (2.0 * math.pi / rng.uniform(8.0, 30.0))
        texture.append((tuple(float(v) for v in k), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.005, 0.015))))
    params = {"scale": sc, "canal_factor": canal_factor, "lordosis_radius_mm": lordosis,
              "canal_ap_mm": a_canal, "thecal_sac_ap_mm": a_sac, "thecal_sac_half_width_mm": w_sac,
              "foramen_offset_mm": w_canal + 5.0 * sc, "s_top": s_top, "s_bottom": s_bottom}
    return Anatomy(lordosis, pose, tuple(layers), keypoints, discs, tuple(texture), params)

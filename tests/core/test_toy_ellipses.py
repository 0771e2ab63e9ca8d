"""Ellipse geometry {s : s^T A s <= r^2} and the Plotly builders that draw it (Fig. 1, Fig. 5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from etr_core.toy.ellipses import ellipse_boundary, ellipse_geometry, stacked_ellipse_polylines
from etr_core.toy.first_order import run_method
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.random_starts import suboptimality_bands
from etr_core.viz.geometry import (
    figure_payload_bytes,
    level_set_polylines,
    suboptimality_figure,
    trajectory_figure,
    trust_region_trace_name,
)


def _random_spd(rng: np.random.Generator, cond: float) -> np.ndarray:
    t = rng.uniform(0, math.pi)
    V = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    lam = np.array([1.0, cond]) * rng.uniform(0.1, 10.0)
    return V @ np.diag(lam) @ V.T


@pytest.mark.parametrize("cond", [1.0, 3.0, 100.0, 1e5])
def test_boundary_points_lie_on_the_ellipse(cond: float) -> None:
    rng = np.random.default_rng(int(cond))
    for _ in range(5):
        A = _random_spd(rng, cond)
        r = rng.uniform(0.1, 5.0)
        c = rng.normal(size=2)
        pts = ellipse_boundary(A, r, center=c, n_points=200)
        s = pts - c
        assert np.allclose(np.einsum("ni,ij,nj->n", s, A, s), r * r, rtol=1e-10)
        assert np.array_equal(pts[0], pts[-1])          # closed polyline
        assert len(pts) == 201


@pytest.mark.parametrize("cond", [1.5, 10.0, 400.0])
def test_semi_axes_are_the_extreme_distances(cond: float) -> None:
    """Semi-axes r / sqrt(lambda_i): checked as the longest and shortest distance from the centre over a
    dense boundary written with a Cholesky factor (not the eigen-parametrisation under test)."""
    rng = np.random.default_rng(7)
    A = _random_spd(rng, cond)
    r = 1.7
    geo = ellipse_geometry(A, r)
    lam = np.linalg.eigvalsh(A)
    assert geo.semi_axes == pytest.approx((r / math.sqrt(lam[0]), r / math.sqrt(lam[1])), rel=1e-12)
    C = np.linalg.cholesky(A)
    phi = np.linspace(0, 2 * math.pi, 200_001)
    pts = r * np.linalg.solve(C.T, np.stack([np.cos(phi), np.sin(phi)])).T
    dist = np.linalg.norm(pts, axis=1)
    assert dist.max() == pytest.approx(geo.semi_axes[0], rel=1e-6)
    assert dist.min() == pytest.approx(geo.semi_axes[1], rel=1e-6)
    far = pts[np.argmax(dist)]
    angle = math.degrees(math.atan2(far[1], far[0]))
    diff = (angle - geo.angle_deg) % 180.0
    assert min(diff, 180.0 - diff) < 1e-2


def test_known_axis_aligned_and_rotated_cases() -> None:
    geo = ellipse_geometry(np.diag([1.0, 4.0]), 2.0)
    assert geo.semi_axes == pytest.approx((2.0, 1.0))
    assert geo.angle_deg == pytest.approx(0.0, abs=1e-12)
    t = math.radians(30.0)
    V = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    geo = ellipse_geometry(V @ np.diag([0.25, 9.0]) @ V.T, 3.0)
    assert geo.semi_axes == pytest.approx((6.0, 1.0))
    assert geo.angle_deg == pytest.approx(30.0, abs=1e-9)


def test_stacked_polylines_one_segment_per_ellipse() -> None:
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 2))
    shapes = np.stack([_random_spd(rng, 20.0) for _ in range(4)])
    radii = np.array([0.5, 1.0, -1.0, 2.0])   # the non-positive one is skipped
    x, y = stacked_ellipse_polylines(centers, shapes, radii, n_points=30)
    segments = np.split(np.stack([x, y], 1), np.where(np.isnan(x))[0])
    segments = [s[~np.isnan(s[:, 0])] for s in segments if np.any(~np.isnan(s[:, 0]))]
    assert len(segments) == 3
    for seg, i in zip(segments, [0, 1, 3]):
        d = seg - centers[i]
        assert len(seg) == 31
        assert np.allclose(np.einsum("ni,ij,nj->n", d, shapes[i], d), radii[i] ** 2, rtol=1e-10)


@pytest.mark.parametrize("A,word", [
    (np.array([[1.0, 0.0], [0.0, -1.0]]), "positive definite"),
    (np.array([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
    (np.eye(3), "shape"),
    (np.array([[np.nan, 0.0], [0.0, 1.0]]), "finite"),
])
def test_invalid_matrices_are_rejected(A: np.ndarray, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        ellipse_boundary(A, 1.0)


# ------------------------------------------------------------------------------------------------
# Plotly builders


def _spec(fig) -> dict:
    return json.loads(fig.to_json())


def _xy(trace: dict) -> tuple[np.ndarray, np.ndarray]:
    def arr(v):
        if isinstance(v, dict):
            import base64

            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(np.float64)
        return np.asarray(v, dtype=np.float64)

    return arr(trace["x"]), arr(trace["y"])


def test_level_sets_are_exact_level_curves() -> None:
    q = make_quadratic(25.0, 40.0)
    x, y, levels = level_set_polylines(q, (-3, 3, -3, 3), n_levels=8)
    pts = np.stack([x, y], 1)
    ok = ~np.isnan(x)
    values = q.value(pts[ok])
    # every point's value is one of the levels
    rel = np.min(np.abs(values[:, None] - levels[None, :]) / levels[None, :], axis=1)
    assert rel.max() < 1e-10
    assert len(levels) == 8 and np.all(np.diff(levels) > 0)


def test_trajectory_figure_traces_ellipses_and_frames() -> None:
    q = make_quadratic(20.0, 0.0)
    trs = [run_method(q, "gd", 0.5 / q.L, 12, (-2.5, 1.5)), run_method(q, "adagrad", 0.5, 12, (-2.5, 1.5))]
    fig = trajectory_figure(q, trs, bounds=(-3.3, 3.3, -3.3, 3.3))
    spec = _spec(fig)
    names = [t["name"] for t in spec["data"]]
    assert names == ["level sets of f", "w*", trust_region_trace_name("GD"), "GD",
                     trust_region_trace_name("Adagrad (diagonal)"), "Adagrad (diagonal)"]
    assert all(t["type"] == "scatter" for t in spec["data"])        # no go.Contour (vanishes with frames)
    assert spec["layout"]["yaxis"]["scaleanchor"] == "x"
    # every other trust region, each on its ellipse {w_t + s : s^T A_t s = r_t^2}
    for trace_index, tr in ((2, trs[0]), (4, trs[1])):
        x, y = _xy(spec["data"][trace_index])
        pts = np.stack([x, y], 1)
        segments = [s for s in np.split(pts, np.where(np.isnan(x))[0]) if len(s[~np.isnan(s[:, 0])])]
        drawn = list(range(0, tr.n_steps, 2))
        assert len(segments) == len(drawn)
        for seg, t in zip(segments, drawn):
            seg = seg[~np.isnan(seg[:, 0])]
            d = seg - tr.iterates[t]
            val = np.einsum("ni,ij,nj->n", d, tr.shapes[t], d)
            assert np.allclose(val, tr.radii[t] ** 2, rtol=2e-6)    # float32 transport
    px, _ = _xy(spec["data"][3])
    assert len(px) == 13
    # frames: one per iteration, referencing the dynamic traces by index; the last is the full picture
    frames = spec["frames"]
    assert [f["name"] for f in frames] == [str(k) for k in range(13)]
    assert all(f["traces"] == [2, 3, 4, 5] for f in frames)
    for k, frame in enumerate(frames):
        fx, _ = _xy(frame["data"][1])
        assert len(fx) == k + 1
    assert spec["layout"]["sliders"][0]["active"] == 12
    assert spec["layout"]["sliders"][0]["steps"][3]["args"][1]["frame"]["redraw"] is False


def test_trajectory_figure_without_trust_regions_or_frames() -> None:
    q = make_quadratic(5.0)
    tr = run_method(q, "rmsprop", 0.1, 5, (1.0, 1.0))
    spec = _spec(trajectory_figure(q, [tr], show_trust_regions=False, animate=False))
    assert [t["name"] for t in spec["data"]] == ["level sets of f", "w*", "RMSProp"]
    assert not spec.get("frames")


def test_frames_respect_the_point_budget() -> None:
    q = make_quadratic(50.0, 20.0)
    names = ["gd", "adagrad", "adagrad_full", "rmsprop", "adam"]
    trs = [run_method(q, m, 0.01 if m == "gd" else 0.3, 200, (-2.5, 1.5)) for m in names]
    fig = trajectory_figure(q, trs, frame_point_budget=20_000)
    assert 3 <= len(fig.frames) <= 61
    assert figure_payload_bytes(fig) < 1_500_000


def test_suboptimality_figure_has_band_and_mean() -> None:
    q = make_quadratic(10.0)
    bands = suboptimality_bands(q, {"gd": 0.5 / q.L, "adagrad": 0.5}, 10, n_starts=6, seed=1)
    spec = _spec(suboptimality_figure(bands))
    names = [t["name"] for t in spec["data"]]
    assert names == ["GD: 90% band", "GD", "Adagrad (diagonal): 90% band", "Adagrad (diagonal)"]
    _, y = _xy(spec["data"][1])
    assert np.allclose(y, bands["gd"].mean, rtol=1e-6)

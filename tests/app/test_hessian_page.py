"""The page "Hessian diagonal dominance" (section 3.2, Fig. 2, Fig. 6, Proposition 1) under AppTest."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.app.support import open_page, plotly_figures

PAGE = "pages/hessian_diagonal.py"
TINY = {"hd_width": "2", "hd_steps": "20"}   # 64-2-10 on digits: d = 160


def _open(query: dict[str, str] | None = None) -> AppTest:
    return open_page(PAGE, query, timeout=180)


_figures = plotly_figures


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(scope="module")
def default_page() -> AppTest:
    return _open()


def test_default_page_computes_and_draws(default_page):
    at = default_page
    heatmap, bars, eigs = _figures(at)
    assert heatmap["data"][0]["type"] == "heatmap" and heatmap["data"][0]["name"] == "log10 |H|"
    assert "d = 1,210" in heatmap["layout"]["title"]["text"]
    assert len(heatmap["layout"]["shapes"]) == 2            # two layer blocks outlined
    assert heatmap["layout"]["yaxis"]["scaleanchor"] == "x"
    assert [t["name"] for t in bars["data"]].count("initialisation") == 2   # one per baseline panel
    assert {t["name"] for t in eigs["data"]} == {"λ_max", "λ_min"}
    metrics = _metrics(at)
    assert metrics["δ_W, equal scales = 1/d"] == f"{1 / 1210:.4g}"
    delta_h = float(metrics["δ_H (diagonal mass)"])
    assert 1 / 1210 < delta_h < 0.2
    assert any("64-16-10" in h.value and "d = 1,210" in h.value for h in at.subheader)
    latex = " ".join(e.value for e in at.latex)
    assert "1{,}209" in latex
    assert any("upside down" in i.value for i in at.info)
    assert any("implicit_trust_regions" in m.value for m in at.markdown)
    assert not at.warning


def test_numbers_match_an_independent_hessian():
    # 64-2-10 on digits at initialisation: rebuild the network and its batch, Hessian by autograd
    at = _open({**TINY, "hd_phase": "init"})
    from etr_core.data import load_dataset
    from etr_core.models import MLP

    ds = load_dataset("digits", seed=0)
    x = ds.train_x.reshape(ds.n_train, -1)
    idx = torch.randperm(ds.n_train, generator=torch.Generator().manual_seed(0))[:256]
    xb, yb = x[idx].double(), ds.train_y[idx]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        model = MLP([64, 2, 10])
    params = [p.detach().double() for p in model.parameters()]
    shapes = [p.shape for p in params]

    def loss(w):
        p = [t.view(s) for t, s in zip(w.split([s.numel() for s in shapes]), shapes)]
        return torch.nn.functional.cross_entropy(torch.tanh(xb @ p[0].T + p[1]) @ p[2].T + p[3], yb)

    H = torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params])).abs()
    expected = float(H.diagonal().sum() / H.sum())
    assert float(_metrics(at)["δ_H (diagonal mass)"]) == pytest.approx(expected, rel=1e-3)
    heatmap = _figures(at)[0]
    assert heatmap["data"][0]["z"]["shape"] == "160, 160"     # d <= 200 cells: full resolution


def test_toggle_removes_block_outlines_and_widgets_change_the_result():
    at = _open(TINY)
    assert len(_figures(at)[0]["layout"]["shapes"]) == 2
    at.toggle(key="hd_blocks").set_value(False).run()
    assert not at.exception
    assert "shapes" not in _figures(at)[0]["layout"] or not _figures(at)[0]["layout"]["shapes"]
    before = _metrics(at)["δ_H (diagonal mass)"]
    at.selectbox(key="hd_act").set_value("sigmoid").run()
    assert any("(sigmoid)" in h.value for h in at.subheader)
    assert _metrics(at)["δ_H (diagonal mass)"] != before
    at.radio(key="hd_phase").set_value("init").run()
    assert any("step 0 of 20" in c.value for c in at.caption)
    at.select_slider(key="hd_batch").set_value(64).run()
    assert any("on 64 training examples" in c.value for c in at.caption)
    at.selectbox(key="hd_data").set_value("moons").run()
    assert any("2-2-2" in h.value for h in at.subheader)
    at.slider(key="hd_seeds").set_value(2).run()
    assert not at.exception
    bars = _figures(at)[1]
    assert any(t["error_y"]["visible"] for t in bars["data"])      # 95% intervals with 2 seeds
    assert "over 2 seed(s)" in bars["layout"]["title"]["text"]


def test_presets_set_widgets():
    at = _open(TINY)
    at.button(key="hd_Two layers (d = 1,482)").click().run()
    assert at.select_slider(key="hd_width").value == 16
    assert at.slider(key="hd_depth").value == 2
    assert not at.exception
    assert any("64-16-16-10" in h.value and "d = 1,482" in h.value for h in at.subheader)


def test_oversized_network_gives_a_clear_message():
    at = _open(TINY)
    at.button(key="hd_Too large").click().run()
    assert not at.exception
    (warning,) = at.warning
    assert "d = 150,794" in warning.value and "limit of 4,000" in warning.value
    assert "sampled" in warning.value
    assert not at.get("plotly_chart")


def test_query_params_are_clamped_not_crashing():
    at = _open({"hd_width": "1e9", "hd_depth": "99", "hd_seeds": "1e9", "hd_steps": "abc",
                "hd_batch": "-4", "hd_phase": "bogus", "hd_data": "imagenet", "hd_act": "swish"})
    assert at.select_slider(key="hd_width").value == 256
    assert at.slider(key="hd_depth").value == 3
    assert at.slider(key="hd_seeds").value == 10
    assert at.select_slider(key="hd_steps").value == 200
    assert at.select_slider(key="hd_batch").value == 16      # -4 snaps to the smallest batch
    assert at.radio(key="hd_phase").value == "end"
    assert at.selectbox(key="hd_data").value == "digits"
    assert at.selectbox(key="hd_act").value == "tanh"
    assert "limit of 4,000" in at.warning[0].value

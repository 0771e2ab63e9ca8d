"""The page "Hessian diagonal dominance" (section 3.2, Fig. 2, Fig. 6, Proposition 1) under AppTest."""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from etr_core.hessian_plan import CPU_CAP, estimate, page_dataset
from tests.app.support import APP, open_page, plotly_figures

PAGE = "pages/hessian_diagonal.py"
TINY = {"hd_width": "2", "hd_steps": "20"}   # 64-2-10 on digits: d = 160
KEYS = ["hd_data", "hd_width", "hd_depth", "hd_act", "hd_batch", "hd_steps", "hd_phase", "hd_seeds",
        "hd_blocks", "seed"]


def _open(query: dict[str, str] | None = None, timeout: float = 180) -> AppTest:
    """Open the page and rerun until the first answer is there (the first visit starts the worker)."""
    at = open_page(PAGE, query, timeout=timeout)
    deadline = time.monotonic() + timeout
    while not at.metric and at.get("progress") and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    return at


def _computing(at: AppTest) -> bool:
    return any(b.key == "hd_cancel" for b in at.button)


def _settle(at: AppTest, timeout: float = 120) -> AppTest:
    """Rerun until the background part has finished (AppTest does not run fragment timers)."""
    deadline = time.monotonic() + timeout
    while _computing(at) and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    return at


_figures = plotly_figures


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(scope="module")
def default_page() -> AppTest:
    return _settle(_open())


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
    _settle(at)
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


def test_the_abusive_url_is_clamped_to_the_cap_with_a_message_written_back():
    query = {"hd_width": "48", "hd_steps": "2000", "hd_seeds": "10", "hd_batch": "1000000"}
    at = _open(query)
    (warning,) = at.warning
    assert f"cap of {CPU_CAP:.0f} s" in warning.value and "seeds 10 ->" in warning.value
    seeds, batch = at.slider(key="hd_seeds").value, at.select_slider(key="hd_batch").value
    assert seeds < 10 and batch < 1_000_000
    # written back: the link reopens with what the page computed (a default may be left out)
    assert at.query_params.get("hd_seeds", "1") == str(seeds)
    assert at.query_params.get("hd_batch", "256") == str(batch)
    from etr_core.hessian_plan import PageSettings

    x, _, _ = page_dataset("digits")
    used = PageSettings("digits", (64, 48, 10), "tanh", batch, at.select_slider(key="hd_steps").value, "end",
                        seeds, 0, len(x))
    assert estimate(used)[1] <= CPU_CAP
    assert any("d = 3,610" in h.value for h in at.subheader)


HOSTILE = {
    "nan": "NaN", "inf": "inf", "minus_inf": "-Infinity", "huge": "9" * 400, "negative": "-5",
    "empty": "", "text": "abc'; drop", "float": "1e308",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_every_query_key_survives_hostile_values(kind):
    at = AppTest.from_file(APP, default_timeout=180)
    for key in KEYS:
        at.query_params[key] = HOSTILE[kind]
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.slider(key="hd_depth").value in (1, 2, 3)
    assert at.select_slider(key="hd_width").value in (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)


def test_repeated_query_keys_do_not_raise():
    at = AppTest.from_file(APP, default_timeout=180)
    for key in KEYS:
        at.query_params[key] = ["2", "3"]
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception


def _write_idx(folder, name: str, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(folder / f"{name}.gz", "wb") as f:
        f.write(header + array.tobytes())


def test_file_datasets_are_offered_when_present(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem, n in (("train", 40), ("t10k", 10)):
        _write_idx(folder, f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(folder, f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    monkeypatch.setenv("ETR_DATA", str(tmp_path))
    at = _open({"hd_data": "mnist", "hd_width": "2", "hd_steps": "10", "hd_batch": "16"})
    options = " ".join(at.selectbox(key="hd_data").options)
    assert "MNIST (first 5,000" in options and "Fashion" not in options
    assert any("784-2-10" in h.value and "d = 1,600" in h.value for h in at.subheader)


def test_cancel_stops_the_background_and_keeps_the_first_answer():
    at = _open({**TINY, "hd_seeds": "10", "hd_steps": "500", "seed": "7"})
    if not _computing(at):               # the background already finished on a fast machine
        pytest.skip("nothing left to cancel")
    at.button(key="hd_cancel").click().run()
    assert not at.exception
    assert any("cancelled" in i.value for i in at.info)
    assert _metrics(at)["δ_H (diagonal mass)"]

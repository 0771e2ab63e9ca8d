"""The app frame: navigation over every page, the shared sidebar, the home page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui.registry import PAGES

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=90)


def test_every_registered_page_file_exists() -> None:
    missing = [entry.path for entry in PAGES if not (ROOT / entry.path).exists()]
    assert not missing, f"pages listed in ui/registry.py but missing: {missing}"


def test_url_paths_are_unique() -> None:
    paths = [entry.url_path for entry in PAGES]
    assert len(paths) == len(set(paths))


def test_home_loads_with_sidebar_and_links() -> None:
    at = _app().run()
    assert not at.exception
    assert "Ellipsoidal trust-region methods" in at.title[0].value
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Device in use" in captions and ("cpu" in captions or "cuda" in captions)
    assert at.number_input(key="seed").value == 0
    page_links = [element.proto.label for element in at.get("page_link")]
    for entry in PAGES:
        if entry.url_path != "home":
            assert any(entry.title in label for label in page_links), f"home does not link {entry.title}"
    # the story cites this project's measurements, not the paper's
    markdown = " ".join(m.value for m in at.markdown)
    assert "744 ± 140" in markdown and "1422 ± 270" in markdown and "docs/paper-results.md" in markdown


def test_seed_from_url_is_clamped_not_crashing() -> None:
    at = _app()
    at.query_params["seed"] = "-5"
    at.run()
    assert not at.exception
    assert at.number_input(key="seed").value == 0
    at = _app()
    at.query_params["seed"] = "not-a-number"
    at.run()
    assert not at.exception
    assert at.number_input(key="seed").value == 0
    at = _app()
    at.query_params["seed"] = "42"
    at.run()
    assert at.number_input(key="seed").value == 42


def test_every_page_run_holds_the_live_workers_and_releases_them_after_the_tail(monkeypatch) -> None:
    """app.py draws each page inside the server's foreground gate (etr_core.live.foreground)."""
    import time

    from etr_core.live import foreground

    monkeypatch.setattr(foreground, "_DEFAULT", None)
    monkeypatch.setenv("ETR_LIVE_YIELD", "1")
    monkeypatch.setenv("ETR_LIVE_YIELD_TAIL_MS", "3000")
    seen: list[int] = []
    original = foreground.ForegroundGate.busy

    def spy(self):
        seen.append(self.active)
        return original(self)

    monkeypatch.setattr(foreground.ForegroundGate, "busy", spy)
    started = time.time()
    at = _app().run()
    ended = time.time()
    assert not at.exception and seen == [0]
    gate = foreground._DEFAULT
    assert gate is not None and gate.active == 0
    assert started + 3.0 - 0.05 <= gate.until() <= ended + 3.0 + 0.05


def test_pages_never_pause_training_by_default(monkeypatch) -> None:
    from etr_core.live import foreground

    monkeypatch.setattr(foreground, "_DEFAULT", None)
    monkeypatch.delenv("ETR_LIVE_YIELD", raising=False)
    at = _app().run()
    assert not at.exception and foreground._DEFAULT is None and not at.warning


def test_a_bad_yield_setting_is_one_warning_and_the_page_still_draws(monkeypatch) -> None:
    from etr_core.live import foreground

    monkeypatch.setattr(foreground, "_DEFAULT", None)
    monkeypatch.setenv("ETR_LIVE_YIELD", "yes")
    at = _app().run()
    assert not at.exception
    assert any("ETR_LIVE_YIELD" in w.value for w in at.warning)
    assert "Ellipsoidal trust-region methods" in at.title[0].value


def test_the_live_page_itself_never_pauses_the_training_it_shows(monkeypatch) -> None:
    from etr_core.live import foreground

    monkeypatch.setattr(foreground, "_DEFAULT", None)
    monkeypatch.setenv("ETR_LIVE_YIELD", "1")
    calls: list[str] = []
    original = foreground.ForegroundGate.busy
    monkeypatch.setattr(foreground.ForegroundGate, "busy",
                        lambda self: calls.append("busy") or original(self))
    at = _app().run()
    assert calls == ["busy"]  # the home page
    at.switch_page("pages/live_training.py").run()
    assert not at.exception and calls == ["busy"]
    at.switch_page("pages/implicit_trust_regions.py").run()
    assert not at.exception and calls == ["busy", "busy"]

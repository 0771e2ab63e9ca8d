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

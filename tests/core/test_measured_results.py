"""The numbers the app quotes as measured are the ones docs/paper-results.md reports."""

from __future__ import annotations

import re
from pathlib import Path

from etr_core.viz.measured_results import AUTOENCODER_SENTENCE, DOC, FASHION_MLP_BACKPROPS, measured_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_every_quoted_number_is_in_the_results_document() -> None:
    doc = (ROOT / DOC).read_text(encoding="utf-8")
    for method, value in FASHION_MLP_BACKPROPS.items():
        assert value in doc, f"{method}: {value} is not in {DOC}"
    for number in re.findall(r"\d[\d,.]*\d", AUTOENCODER_SENTENCE):
        if number in ("1e-8", "1e-5"):
            continue
        assert number in doc, f"{number} of the autoencoder sentence is not in {DOC}"


def test_the_ellipsoidal_methods_are_ordered_as_measured() -> None:
    mean = {m: float(v.split("±")[0]) for m, v in FASHION_MLP_BACKPROPS.items()}
    assert mean["TR_rms"] < mean["TR_ada"] < mean["TR_uni"]
    text = measured_markdown()
    assert all(v in text for v in FASHION_MLP_BACKPROPS.values()) and DOC in text

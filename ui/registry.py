"""The app's pages: one entry per file in ``pages/`` (used by ``app.py`` and the tests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageEntry:
    section: str
    path: str
    title: str
    icon: str
    url_path: str
    figure: str  # the paper figure(s) the page reproduces


# Emoji icons: Material icons make the browser fetch a favicon from a font CDN, which fails offline.
PAGES: tuple[PageEntry, ...] = (
    PageEntry("Overview", "pages/home.py", "The story in five figures", "🏠", "home", "—"),
    PageEntry("Geometry of trust regions", "pages/implicit_trust_regions.py",
              "Adaptive methods are trust-region methods", "🥚", "implicit_trust_regions",
              "Fig. 1, Fig. 5, Theorem 1"),
    PageEntry("Geometry of trust regions", "pages/newton_vs_trust_region.py",
              "Newton vs trust region", "⛰️", "newton_vs_trust_region", "Fig. 7, Fig. 8"),
    PageEntry("Geometry of trust regions", "pages/second_order_2d.py",
              "Second-order TR in 2-D", "🎯", "second_order_2d", "Algorithm 1 in 2-D"),
    PageEntry("Neural networks", "pages/hessian_diagonal.py",
              "Hessian diagonal dominance", "🔲", "hessian_diagonal", "Fig. 2, Fig. 6, Proposition 1"),
    PageEntry("Neural networks", "pages/live_training.py", "Live training", "📉", "live_training",
              "Fig. 3, Fig. 4"),
)

"""What this project measured for the paper's section 5, as the app cites it (docs/paper-results.md).

The pages quote these numbers instead of the paper's: they are the project's own measurements on
the real Fashion-MNIST files (reconstructed split), with the command and the full tables in
``docs/paper-results.md``. A test checks that every number here appears in that document, so the
two cannot drift apart.
"""

from __future__ import annotations

__all__ = ["AUTOENCODER_SENTENCE", "DOC", "FASHION_MLP_BACKPROPS", "FASHION_MLP_SETUP", "measured_markdown"]

DOC = "docs/paper-results.md"

FASHION_MLP_SETUP = ("Fashion-MNIST (reconstructed split), the paper's 784-128-10 tanh MLP, 3 seeds, "
                     "backprops to a training loss of 0.4 (mean ± 95% interval)")

# method -> backprops to training loss 0.4 (docs/paper-results.md, section 1)
FASHION_MLP_BACKPROPS: dict[str, str] = {
    "TR_rms": "744 ± 140",
    "TR_ada": "975 ± 140",
    "TR_uni": "1422 ± 270",
    "Adagrad (best first-order, batch 32)": "1280 ± 200",
    "Adam (batch 32)": "1573 ± 570",
}

AUTOENCODER_SENTENCE = (
    "On the Fashion-MNIST autoencoder (all 60,000 training images, 5 seeds, 5,000 backprops on a GPU) "
    "TR_rms leaves the mean-image plateau in every run (loss 0.45 after 684 ± 18 backprops, final "
    "0.3295) while TR_uni stays on it in every run and TR_ada leaves it in two of five; Adam still gets "
    "there first (200 backprops). The ellipsoid's floor decides: with m ≥ 1e-8 (this project's "
    "default, the scale of Adam's ε) the RMSProp region keeps its shape on the plateau; with a floor "
    "of 1e-5 none of the paper's TR methods left it (digits, 8,000 backprops; Fashion-MNIST, 400)."
)


def measured_markdown() -> str:
    """Markdown: the Fashion-MNIST MLP numbers as a bullet list and the autoencoder sentence."""
    rows = "\n".join(f"- {method}: {value}" for method, value in FASHION_MLP_BACKPROPS.items())
    return f"*{FASHION_MLP_SETUP}:*\n\n{rows}\n\n{AUTOENCODER_SENTENCE} Details: `{DOC}`."

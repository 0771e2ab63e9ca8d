"""The 2-D "toy world" the app draws: tunable quadratics, non-convex test functions, first-order
methods with their implicit trust regions (paper section 3, Theorem 1, Fig. 1 and 5) and local
quadratic models with Newton / trust-region / Gauss-Newton steps (appendix B, Figs. 7 and 8)."""

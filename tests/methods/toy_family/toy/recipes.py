"""The toy family's training recipes: L2 only, on both data regimes."""

RECIPES = {
    regime: {"loss_weights": {"reconstruction": 1.0}} for regime in ("chest", "digitanatomy")
}

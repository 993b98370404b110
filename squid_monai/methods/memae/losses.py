"""MemAE's objective (review deck, "MemAE [2/3]"): the auto-encoder's L2 plus the entropy of
the memory addressing weights,

    L = w_rec * mean((x - x_hat)^2) + w_ent * mean_q( sum_i -w_hat_qi * log(w_hat_qi) )

the second term over every addressing vector ``w_hat_q`` (one per query: a pixel of the
encoding). ``w_ent`` is the MemAE paper's alpha, 0.0002 (the documents give no value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..autoencoder import reconstruction_error

__all__ = ["MemAELossWeights", "addressing_entropy", "memae_losses"]

#: inside the logarithm of the entropy: keeps ``0 * log 0`` at 0 with a finite gradient
ENTROPY_EPS = 1e-12


@dataclass
class MemAELossWeights:
    """Weights of the L2 and entropy terms (``entropy``: the MemAE paper's alpha)."""

    reconstruction: float = 1.0
    entropy: float = 0.0002


def addressing_entropy(weights: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over addressing vectors of ``sum_i -w_i log w_i`` (MemAE's entropy loss), the
    items along ``dim`` of ``weights`` (e.g. (B, N, h, w): one vector per encoding pixel).
    Low when each query reads few items: it pushes the addressing to be sparse."""
    weights = weights.float()
    return -(weights * torch.log(weights + ENTROPY_EPS)).sum(dim).mean()


def memae_losses(
    out: dict[str, torch.Tensor],
    image: torch.Tensor,
    weights: MemAELossWeights,
    num_models: int = 1,
) -> dict[str, torch.Tensor]:
    """``reconstruction``, ``entropy`` (of ``out["weights"]``) and ``total`` (their weighted
    sum times ``num_models``: what is back-propagated), all in fp32."""
    terms = {"reconstruction": reconstruction_error(out, image)}
    terms["entropy"] = addressing_entropy(out["weights"])
    total = weights.reconstruction * terms["reconstruction"] + weights.entropy * terms["entropy"]
    terms["total"] = num_models * total
    return terms

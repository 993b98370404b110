"""GANomaly as a model family (Akcay et al., "GANomaly: semi-supervised anomaly detection via
adversarial training", ACCV 2018; ``shared/docs/BASELINES.md``, GANomaly row; SQUID paper
Table 1: 78.0 AUC on ZhangLab, 68.9 on CheXpert; section 5.1 / Figure 6: it "tends to
reconstruct an exemplar image averaged from the training examples").

* networks (:mod:`.networks`): the encoder-decoder-encoder generator
  ``x -> z = G_E(x) -> x_hat = G_D(z) -> z_hat = E(x_hat)`` and the DCGAN discriminator,
  from MONAI ``Convolution`` blocks; presets ``tiny``, ``small``, ``digitanatomy_small``,
  ``paper``, ``digitanatomy``;
* losses (:mod:`.losses`): adversarial feature matching (weight 1), contextual L1
  ``|x - x_hat|`` (weight 50), latent L2 ``(z - z_hat)^2`` (weight 1); the discriminator's
  BCE on real vs generated;
* training (:mod:`.trainer`): generator step then discriminator step every iteration, and
  the re-initialisation of the discriminator when its loss collapses below 1e-5;
* score (:mod:`.scorer`): the latent distance ``mean |z - z_hat|`` per image (normality =
  its negation), reconstruction ``x_hat``; the discriminator is the scorer's
  ``discriminator``, so the Grad-CAM heat map (of its realness logit on the
  reconstruction) is available, though it is not what the score is made of;
* recipes (:mod:`.recipes`): ``chest`` = ``digitanatomy``.

Wiring: ``bundles/squid/configs/methods/ganomaly.json``, merged after ``train.json``.

What the documents leave open, and what was chosen (from the original paper and the
authors' code, github.com/samet-akcay/ganomaly, unless said otherwise):

* architecture: the authors' DCGAN encoder / decoder / discriminator (4x4 stride-2
  convolutions, BatchNorm, LeakyReLU(0.2) / ReLU, Tanh output, no biases, latent size 100,
  widths 64, DCGAN initialisation), scaled to the image size by the authors' own rule
  (halve until the map is 4 x 4); a 3 x 3 last map is allowed so that 96 px builds;
* image range: the bundle's [0, 1] images are mapped to [-1, 1] inside both networks (the
  authors' normalisation) and the reconstruction back to [0, 1]; the contextual L1 is
  taken on the bundle's [0, 1] images with the documents' weight 50 (on the original's
  [-1, 1] scale the same L1 is twice as large: the term weighs half as much here);
* loss reductions: means over all elements (the authors' ``l2_loss`` and ``nn.L1Loss``);
  the discriminator loss ``0.5 (BCE(D(x), 1) + BCE(D(x_hat), 0))`` from logits (the
  original's Sigmoid + BCELoss, numerically safer and autocast-safe), which also makes the
  discriminator a (B, 1, H, W) -> (B, 1) logit network for Grad-CAM;
* the discriminator collapse: ``reinit_discriminator`` (default on, as in the original),
  threshold 1e-5, weights only (the optimiser state is kept, as in the original);
* optimisers: Adam with betas (0.5, 0.999) (the authors' beta1 = 0.5), no weight decay, a
  constant learning rate (the authors' code has no schedule); the rate is the bundle's
  common ``lr`` (1e-4; the authors' code defaults to 2e-4: pass ``--lr 0.0002``);
* score: the paper's L1 latent distance (their code scores the squared distance and
  min-max scales the scores over the test set, which makes a score depend on the other
  test images; here the bundle's calibration on normal training images replaces that);
* BatchNorm: batch statistics in training (the original), running statistics in eval mode,
  so that each image's score is independent of its batch; ``norm = "instance"`` is the
  batch-free alternative;
* the weight average (EMA), the validation-based model selection and the batch size are
  the bundle's, shared by every family (not in the original).
"""

from __future__ import annotations

from ..base import Family
from .losses import GANomalyLossWeights, discriminator_loss, generator_losses, latent_distance
from .networks import GANomalyDecoder, GANomalyDiscriminator, GANomalyEncoder, GANomalyGenerator
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import GANomalyScorer
from .trainer import GANomalyTrainer

__all__ = [
    "FAMILY",
    "GANomalyDecoder",
    "GANomalyDiscriminator",
    "GANomalyEncoder",
    "GANomalyGenerator",
    "GANomalyLossWeights",
    "GANomalyScorer",
    "GANomalyTrainer",
    "discriminator_loss",
    "generator_losses",
    "latent_distance",
]


FAMILY = Family(
    "ganomaly",
    PRESETS,
    RECIPES,
    GANomalyLossWeights,
    GANomalyTrainer,
    GANomalyScorer,
    get_config,
    build,
)

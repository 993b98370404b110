"""AnatPaste as a model family (Sato et al., "AnatPaste: anatomy-aware self-supervised
learning for anomaly detection in chest radiographs", 2022/2023: 92.1 AUC on ZhangLab from
scratch, the best of the synthetic-anomaly methods the issue names).

* augmentation (:mod:`squid_monai.transforms.anatomy`): the lung field found without labels
  (equalisation, Otsu's threshold, morphology) and a patch of the image blended into it, a
  blurred ellipse or rectangle at random opacity; the CutPaste variant (``paste:
  "cutpaste"``) pastes the whole patch anywhere;
* network (:mod:`.networks`): ResNet-18 (MONAI's ``ResNet``, one input channel, from scratch)
  with the authors' projection head and a two-way classifier; presets ``paper`` (256 px),
  ``digitanatomy`` (96 px), ``small`` and ``digitanatomy_small`` (half width, 64 / 96 px,
  CPU), ``tiny`` (tests);
* loss (:mod:`.losses`): cross-entropy, normal (0) vs pasted (1);
* training (:mod:`.trainer`): each step pastes a copy of every normal image of the batch;
  SGD with momentum and a cosine decay (``bundles/squid/configs/methods/anatpaste.json``);
* score (:mod:`.scorer`): the Mahalanobis distance of the L2-normalised trunk embedding to a
  Gaussian (Ledoit-Wolf shrinkage) fitted on normal training images, stored with the
  weights; normality its negation, calibrated as every family's; no reconstruction (the
  scorer returns the input);
* recipes (:mod:`.recipes`): ``chest`` (CPU budget, ``cpu_epochs``) and ``digitanatomy``.

Wiring: ``bundles/squid/configs/methods/anatpaste.json``, merged after ``train.json`` (and
before ``chest_cpu.json`` for the CPU chest recipe).

What the documents leave open, and what was chosen (from the authors' public code unless said
otherwise):

* the lung rule as their code computes it (its threshold comparison keeps the dark side of
  Otsu's level, see the transforms module); sizes in pixels at 256 px scale with the image;
* one input channel instead of the grey image repeated in three; MONAI's ResNet with the
  torchvision stem and bias-free projection shortcuts (torchvision's ResNet-18 layout);
* the embedding for the density is the trunk's (512 features), L2-normalised, as in their
  evaluation; the classifier's own probability is reported (``paste_probability``), not scored;
* the density is fitted on the bundle's calibration images (up to ``calibration_images``
  un-augmented normal training images; the authors use the whole training set), refitted
  before every validation, and the checkpoint carries the one its validation used;
* an epoch is a pass over the training images (the authors define it as 256 steps over a
  3000-image repeated set); the cosine decays per epoch to 0 over the run (PyTorch's
  ``CosineAnnealingLR``; theirs is warm restarts with one period the length of the run);
* model selection: the bundle's smoothed validation AUC (the authors keep the best
  validation AUC, checked every 10 epochs);
* the ``small`` CPU preset halves ResNet-18's widths (a step is 3 times cheaper than at full
  width, so the budget buys more steps); the pretrained and frozen-trunk options of their
  script are absent (nothing can be downloaded, and their README trains from scratch);
* the whole-image jitter is brightness and contrast only (their saturation and hue do
  nothing on a grey image); the weight average (EMA) and the batch size are the bundle's.
"""

from __future__ import annotations

from ..base import Family
from .losses import AnatPasteLossWeights, classification_loss, paste_labels
from .networks import AnatPasteNet
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import AnatPasteScorer, mahalanobis
from .trainer import AnatPasteTrainer, jitter_batch

__all__ = [
    "FAMILY",
    "AnatPasteLossWeights",
    "AnatPasteNet",
    "AnatPasteScorer",
    "AnatPasteTrainer",
    "classification_loss",
    "jitter_batch",
    "mahalanobis",
    "paste_labels",
]

FAMILY = Family(
    "anatpaste",
    PRESETS,
    RECIPES,
    AnatPasteLossWeights,
    AnatPasteTrainer,
    AnatPasteScorer,
    get_config,
    build,
)

"""Finding 4 of issue 42: a traced export holds no device constant.

``torch.jit.trace`` records ``torch.arange(n, device=x.device)`` with the device of the trace
(the CPU) as a constant; the deploy app then moves the model to CUDA and a CPU mask meets CUDA
tensors. Every family's scorer (and SQUID's ``combined`` source, which masks its normal-token
bank) is traced as the export traces it, on noise-calibrated tiny networks."""

import warnings

import torch

from squid_monai.artifact import Recipe
from squid_monai.loading import build, image_size
from squid_monai.methods import family_names
from squid_monai.scoring import calibrate

from .helpers import device_constants


def _scorers():
    for method in family_names():
        recipe = Recipe("tiny", family=method)
        sources = ("logit", "combined") if method == "squid" else (None,)
        for source in sources:
            scorer = build(recipe)
            if source is not None:
                scorer.set_score_source(source)
            size = image_size(recipe)
            calibrate(scorer, [torch.rand(4, 1, size, size)])
            yield f"{method} {source or ''}".strip(), scorer, size


def test_traced_scorers_hold_no_cpu_device_constant():
    found = {}
    for name, scorer, size in _scorers():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                scorer, torch.rand(1, 1, size, size), strict=False, check_trace=False
            )
        constants = device_constants(str(traced.inlined_graph))
        if constants:
            found[name] = constants
    assert not found

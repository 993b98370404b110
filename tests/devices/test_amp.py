"""Finding 6 of issue 42 and the AMP path on a CPU: every family trains under bfloat16
autocast with enabled CPU ``GradScaler`` s, a run without AMP resumes into one with it, and the
scoring that sets a threshold (calibration, validation) runs in fp32 whatever autocast is
around it: a threshold chosen on reduced-precision scores would be applied to fp32 ones, and
an fp16 overflow in validation (NaN scores) would stop the training."""

import pytest
import torch
from monai.handlers import ROCAUC, from_engine
from torch import nn

from squid_monai.artifact import Recipe
from squid_monai.engines import AnomalyEvaluator
from squid_monai.loading import build, image_size
from squid_monai.methods import family_names
from squid_monai.methods.autoencoder import ReconstructionScorer
from squid_monai.metrics import AnomalyMetrics
from squid_monai.scoring import calibrate

from .helpers import CONFIG_SETS, TRAIN, parser

SINGLE_DEVICE = sorted(name for name in CONFIG_SETS if name != "multi_gpu")


def _run(configs, output_dir, **overrides):
    """Train as ``monai.bundle run training`` does; the parser, to inspect what it built."""
    parsed = parser(configs, output_dir, **overrides)
    parsed.get_parsed_content("initialize")
    parsed.get_parsed_content("training")
    return parsed


def _scalers(parsed) -> list[torch.amp.GradScaler]:
    return list(parsed.get_parsed_content("scalers").values())


@pytest.mark.slow
@pytest.mark.parametrize("name", SINGLE_DEVICE)
def test_every_family_trains_with_amp_on_the_cpu(name, tmp_path):
    epochs = 2 if name == "fanogan" else 1  # f-AnoGAN: one epoch per stage
    parsed = _run(CONFIG_SETS[name], tmp_path, epochs=epochs, amp=True)
    trainer = parsed.get_parsed_content("train#trainer")
    assert trainer.state.epoch == epochs and trainer.state.skipped_steps == 0
    used = [s for s in _scalers(parsed) if s.is_enabled() and s._scale is not None]
    assert used and all(s._device == "cpu" for s in used)  # enabled, on the CPU, and stepped
    metrics = parsed.get_parsed_content("validate#evaluator").state.metrics
    assert 0.0 <= metrics["val_auc"] <= 1.0


def test_a_run_without_amp_resumes_into_one_with_amp(tmp_path):
    _run([TRAIN], tmp_path, epochs=1, amp=False)
    parsed = _run([TRAIN], tmp_path, epochs=2, amp=True)
    trainer = parsed.get_parsed_content("train#trainer")
    assert (
        trainer.state.epoch == 2 and trainer.state.iteration == 4
    )  # resumed: 2 iterations per epoch
    assert all(s.is_enabled() and s._scale is not None for s in _scalers(parsed))


def _scorers():
    for method in family_names():
        recipe = Recipe("tiny", family=method)
        scorer = build(recipe)
        images = torch.rand(4, 1, image_size(recipe), image_size(recipe))
        calibrate(scorer, [images])
        yield method, scorer, images


def test_scores_are_fp32_under_autocast():
    drift = {}
    for method, scorer, images in _scorers():
        expected = scorer(images)["score"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = scorer(images)["score"]
        if got.dtype != torch.float32 or not torch.equal(got, expected):
            drift[method] = float((got.float() - expected).abs().max())
    assert not drift


class _Overflows(nn.Module):
    """x -> x / 2 through a 1e5 gain: exact in fp32, inf - inf = NaN where fp16 overflows."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.up.weight.fill_(1e5)
            self.down.weight.copy_(torch.tensor([2e-5, -1.5e-5]).reshape(1, 2, 1, 1))

    def forward(self, x):
        return {"reconstruction": self.down(self.up(x))}


def test_calibration_and_validation_under_fp16_autocast_score_in_fp32():
    """Calibration and validation under a float16 autocast (what AMP is on a GPU): the scores are
    the fp32 ones, finite where fp16 overflows, so the calibration, the metrics, the threshold
    and the training go on."""
    scorer = ReconstructionScorer(_Overflows())
    torch.manual_seed(0)
    batches = [
        {"image": torch.rand(4, 1, 8, 8), "label": torch.tensor([0, 1, 0, 1])} for _ in range(2)
    ]
    expected = calibrate(scorer, batches)
    evaluator = AnomalyEvaluator(
        "cpu",
        batches,
        scorer,
        key_val_metric={"auc": ROCAUC(output_transform=from_engine(["score", "label"]))},
        additional_metrics={
            "val": AnomalyMetrics(output_transform=from_engine(["score", "label"]))
        },
        amp=True,
    )
    with torch.autocast("cpu", dtype=torch.float16):
        assert calibrate(scorer, batches) == expected
        evaluator.run()
    assert torch.isfinite(evaluator.state.output["score"]).all()
    assert 0.0 <= evaluator.state.metrics["auc"] <= 1.0

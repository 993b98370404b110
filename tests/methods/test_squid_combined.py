"""The ``combined`` score source against its definition: the chosen evidence (the negated
logit, the teacher-student difference, the nearest-normal token distance, the two-sided
feature residual, the worst tile), each standardised on the normal calibration images,
summed; then calibrated like every source. Computed here by a second path (the generator's probes and tokens, the
evaluator's feature residual, a loop for the nearest neighbours)."""

from __future__ import annotations

import pytest
import torch

import squid_monai.methods.squid.scorer as scorer_module
from squid_monai.engines.evaluator import feature_residual
from squid_monai.loading import build_scorer
from squid_monai.methods.squid.scorer import EVIDENCE
from squid_monai.scoring import calibrate
from squid_monai.scoring.runtimes import OUTPUTS

from ..scoring import random_scorer

SIZE = 32  # the tiny preset


def _scorer():
    scorer = random_scorer()
    with torch.no_grad():  # tokens of order 1, as a trained model's (random weights give 1e-3)
        scorer.generator.inpainting.project_in.conv.weight.mul_(30.0)
    return scorer.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _nearest(tokens: torch.Tensor, bank: torch.Tensor, leave_out: bool) -> torch.Tensor:
    """Mean over tiles of the squared distance per dimension to the nearest bank token at the same tile."""
    values = []
    for i in range(len(tokens)):
        per_tile = []
        for t in range(tokens.shape[1]):
            d = [
                ((tokens[i, t] - bank[j, t]) ** 2).mean()
                for j in range(len(bank))
                if not (leave_out and j == i)
            ]
            per_tile.append(min(d))
        values.append(torch.stack(per_tile).mean())
    return torch.stack(values)


def _evidence(scorer, images: torch.Tensor, tile_stats=None):
    """(N, 5) negated logit, teacher-student, 0 (the nearest normal, filled in by the caller),
    feature residual, worst standardised tile residual (by ``tile_stats``, else their own)."""
    generator = scorer.generator.eval()
    reconstruction = generator.reconstruct(images)
    logit = scorer.discriminator.eval()(reconstruction).reshape(-1)
    side = SIZE // generator.grid
    tiles = ((images - reconstruction) ** 2).reshape(
        len(images), 1, generator.grid, side, generator.grid, side
    )
    tiles = tiles.mean((1, 3, 5)).flatten(1)  # (N, tiles), row-major
    mean, std = tile_stats if tile_stats is not None else (tiles.mean(0), tiles.std(0))
    return torch.stack(
        [
            -logit,
            generator.probes(images)["teacher_student"],
            torch.zeros_like(logit),
            feature_residual(scorer.discriminator, images, reconstruction),
            ((tiles - mean) / std).amax(1),
        ],
        1,
    ), (mean, std)


@pytest.mark.parametrize(
    "evidence",
    [
        ("logit", "teacher_student", "normal_knn", "feature"),
        ("tile_residual", "normal_knn"),
        ("feature",),
    ],
)
def test_the_combined_score_is_the_sum_of_the_chosen_standardised_evidence(evidence):
    scorer = _scorer()
    scorer.set_score_source("combined", evidence)
    assert set(scorer.evidence) == set(evidence)
    normal, new = _images(10, 1), _images(6, 2)
    mean, std = calibrate(scorer, [normal[:4], normal[4:]])

    bank = scorer.generator.tokens(normal)
    cal, tile_stats = _evidence(scorer, normal)
    cal[:, 2] = _nearest(bank, bank, leave_out=True)  # a calibration image is not its own neighbour
    test, _ = _evidence(scorer, new, tile_stats)
    test[:, 2] = _nearest(scorer.generator.tokens(new), bank, leave_out=False)
    mu, sigma = cal.mean(0), cal.std(0)
    torch.testing.assert_close(scorer.evidence_mean, mu, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(scorer.evidence_std, sigma, rtol=1e-4, atol=1e-7)
    chosen = [EVIDENCE.index(name) for name in evidence]
    feature = EVIDENCE.index("feature")

    def anomaly(e):
        z = (e - mu) / sigma
        z[:, feature] = z[:, feature].abs()  # in either direction
        return z[:, chosen].sum(1)

    normality = -anomaly(cal)
    assert mean == pytest.approx(normality.mean().item(), rel=1e-4, abs=1e-5)
    assert std == pytest.approx(normality.std().item(), rel=1e-4)
    out = scorer(new)
    torch.testing.assert_close(out["normal_knn"], test[:, 2], rtol=1e-4, atol=1e-7)
    expected = torch.sigmoid(-(-anomaly(test) - normality.mean()) / normality.std())
    torch.testing.assert_close(out["score"], expected, rtol=1e-4, atol=1e-5)
    # the logit source on the same networks ranks differently: the evidence is not the logit
    scorer.set_score_source("logit")
    calibrate(scorer, [normal])
    assert not torch.allclose(scorer(new)["score"], out["score"], atol=1e-3)


def test_the_normal_bank_keeps_the_first_images_and_scores_the_rest_against_them(monkeypatch):
    monkeypatch.setattr(scorer_module, "NORMAL_TOKENS", 6)
    scorer = _scorer()
    scorer.set_score_source("combined")
    normal = _images(9, 3)
    calibrate(scorer, [normal])
    assert int(scorer.normal_count) == 6 and scorer.normal_tokens.shape[1] == 6
    tokens = scorer.generator.tokens(normal)
    torch.testing.assert_close(scorer.normal_tokens.transpose(0, 1), tokens[:6])
    # the last three calibration images are not in the bank: their distance is an ordinary one
    expected = torch.cat(
        [_nearest(tokens[:6], tokens[:6], leave_out=True), _nearest(tokens[6:], tokens[:6], False)]
    )
    out = scorer(normal)
    torch.testing.assert_close(out["normal_knn"][6:], expected[6:], rtol=1e-4, atol=1e-7)
    assert (out["normal_knn"][:6] < 1e-6).all()  # scored later, a bank image is its own neighbour


def test_a_combined_model_round_trips_and_older_models_load_as_they_scored(tmp_path):
    scorer = _scorer()
    scorer.set_score_source("combined")
    calibrate(scorer, [_images(8, 4)])
    torch.save(scorer.state_dict(), tmp_path / "model.pt")
    loaded = _scorer()  # built with the logit source, as a loader would
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert loaded.score_source == "combined"
    images = _images(4, 5)
    torch.testing.assert_close(loaded(images)["score"], scorer(images)["score"])
    older = {
        k: v
        for k, v in _scorer().state_dict().items()
        if k
        not in (
            "evidence_weights",
            "evidence_mean",
            "evidence_std",
            "normal_tokens",
            "normal_count",
        )
    }
    fresh = _scorer()
    assert fresh.load_state_dict(older, strict=True) is not None and fresh.score_source == "logit"
    assert set(fresh(images)) == {*OUTPUTS, "tile_residual"}  # the graph outputs and the tiles
    # the first combined models (8e0c101): four pieces of evidence, all summed, no weights
    # buffer, and the logit's own mean (they negated the logit after standardising it); loaded
    # into a scorer built to sum other evidence, they still score as they did
    scorer.set_score_source("combined", ["logit", "teacher_student", "normal_knn", "feature"])
    calibrate(scorer, [_images(8, 4)])
    first = {
        k: (v[:4].clone() if k.endswith(("evidence_mean", "evidence_std")) else v)
        for k, v in scorer.state_dict().items()
        if not k.endswith("evidence_weights")
    }
    first["evidence_mean"][0] *= -1
    built = _scorer()
    built.set_score_source("combined", ["tile_residual"])
    built.load_state_dict(first, strict=True)
    assert built.evidence == ("logit", "teacher_student", "normal_knn", "feature")
    torch.testing.assert_close(built(images)["score"], scorer(images)["score"])


def test_the_combined_source_needs_the_teacher_and_the_memory():
    for ablation in ({"distillation": False}, {"inpainting": False}):
        with pytest.raises(ValueError, match="combined"):
            build_scorer("tiny", **ablation).set_score_source("combined")
    with pytest.raises(ValueError, match="score_source must be one of"):
        _scorer().set_score_source("knn")
    for evidence in ([], ["logit", "pixels"], "logit"):
        with pytest.raises(ValueError, match="evidence must be"):
            _scorer().set_score_source("combined", evidence)
    with pytest.raises(ValueError, match="two normal calibration images"):
        scorer = _scorer()
        scorer.set_score_source("combined")
        calibrate(scorer, [_images(1, 6)])

"""The inference back-ends on the toy preset: BatchNorm folding, ONNX Runtime, OpenVINO and
OpenVINO INT8 against eager PyTorch, with the parity contract (fp32 scores to 1e-4, batch
independence, per-image normalisation kept). Seconds each; the runtimes are optional
(``pip install squid-monai[export]``), their tests skip without them."""

from __future__ import annotations

import pytest
import torch

from squid_monai.artifact import EXPORT_FILES
from squid_monai.loading import build_scorer
from squid_monai.methods.squid.networks import PerImageBatchNorm2d
from squid_monai.scoring import PerImageInferer, forward, runtimes
from squid_monai.scoring.folding import fast_eager, fold_batchnorm
from squid_monai.scoring.parity import FP32_TOLERANCE, measure_parity

from . import random_scorer

SIZE = 32  # the tiny preset


def _needs(fmt: str) -> None:
    if not runtimes.available(fmt):
        pytest.skip(
            f"{runtimes.RUNTIMES[fmt]}{' and nncf' if fmt.endswith('int8') else ''} not installed "
            "(pip install squid-monai[export])"
        )


@pytest.fixture(scope="module")
def scorer():
    """A tiny scorer with non-trivial BatchNorm statistics and calibration (random weights)."""
    scorer = random_scorer()
    # centred on these logits with the spread of a trained model's (0.55 for a trained `small`):
    # the spread of random weights' logits on noise is arbitrary, and it scales every difference
    out = scorer(torch.rand(8, 1, SIZE, SIZE))
    scorer.set_calibration(float(out["logit"].mean()), 0.5, 0.5)
    return scorer.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(12, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def onnx_file(scorer, tmp_path_factory):
    _needs("onnx") if runtimes.available("onnx") else _needs("openvino")
    return runtimes.export_onnx(
        scorer, tmp_path_factory.mktemp("onnx") / "model.onnx", SIZE, card_json='{"a": 1}'
    )


_BUILT: dict = {}


def _exported(fmt, onnx_file, scorer, images):
    """The toy scorer on ``fmt`` (built once per test session)."""
    _needs(fmt)
    if fmt not in _BUILT:
        model = onnx_file if fmt == "onnx" else runtimes.to_openvino(onnx_file)
        if fmt == "openvino_int8":
            model = runtimes.quantize_openvino(model, [images])
        _BUILT[fmt] = runtimes.ExportedScorer(model, scorer, fmt)
    return _BUILT[fmt]


def test_folding_keeps_scores_and_the_per_image_norms(scorer, images):
    folded = fold_batchnorm(scorer)
    plain_bn = [m for m in folded.modules() if type(m) is torch.nn.BatchNorm2d]
    per_image = [m for m in folded.modules() if isinstance(m, PerImageBatchNorm2d)]
    assert not plain_bn and len(per_image) == len(
        [m for m in scorer.modules() if isinstance(m, PerImageBatchNorm2d)]
    )
    for fast in (folded, fast_eager(scorer)):
        torch.testing.assert_close(
            fast(images)["score"], scorer(images)["score"], atol=FP32_TOLERANCE, rtol=0
        )


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_fp32_runtimes_meet_the_parity_contract(fmt, onnx_file, scorer, images):
    exported = _exported(fmt, onnx_file, scorer, images)
    result = measure_parity(scorer, exported, images, None, quantised=False, batch_size=5)
    assert result["default"], result
    expected, got = scorer(images), exported(images)
    assert set(got) == {
        "score",
        "logit",
        "residual",
        "reconstruction",
        "domain_distance",
    }  # the exported outputs, every family's (the domain guard's too)
    for key in got:
        torch.testing.assert_close(got[key], expected[key], atol=FP32_TOLERANCE, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_runtimes_score_each_image_alone(fmt, onnx_file, scorer, images):
    """Batch independence, and the discriminator still normalises each image by its own
    statistics: scaling the *other* images of the batch changes nothing. (INT8 is not held
    to this in batches: a last-bit difference upstream can flip an activation's INT8 step;
    inference scores one image at a time, ``PerImageInferer``, the test below.)"""
    exported = _exported(fmt, onnx_file, scorer, images)
    alone = forward(exported, images, per_image=True)["score"]
    crowd = images.clone()
    crowd[1:] = crowd[1:] * 0.2 + 0.7
    torch.testing.assert_close(exported(images)["score"], alone, atol=FP32_TOLERANCE, rtol=0)
    torch.testing.assert_close(exported(crowd)["score"][0], alone[0], atol=FP32_TOLERANCE, rtol=0)


def test_export_keeps_per_image_normalisation_not_running_statistics(onnx_file, scorer, images):
    got = _exported("onnx", onnx_file, scorer, images)(images)["logit"]
    running = build_scorer("tiny")
    running.load_state_dict(scorer.state_dict())
    running.discriminator.per_image_norm = False
    assert (running(images)["logit"] - got).abs().max() > 100 * FP32_TOLERANCE
    torch.testing.assert_close(got, scorer(images)["logit"], atol=FP32_TOLERANCE, rtol=0)


def test_int8_parity_is_measured_not_assumed(onnx_file, scorer, images):
    exported = _exported("openvino_int8", onnx_file, scorer, images)
    labels = [0] * 6 + [1] * 6
    result = measure_parity(scorer, exported, images, labels, quantised=True, batch_size=5)
    assert {
        "auc",
        "auc_reference",
        "spearman",
        "max_abs_score_diff",
        "batch_max_abs_score_diff",
    } <= set(result)
    contract_met = (
        abs(result["auc"] - result["auc_reference"]) <= 0.005
        and result["spearman"] >= 0.999
        and result["batch_max_abs_score_diff"] <= FP32_TOLERANCE
    )
    assert result["default"] == contract_met
    # the inference path scores one image at a time: bitwise the same whatever the batch
    alone = torch.cat(
        [PerImageInferer()(images[i : i + 1], exported)["score"] for i in range(len(images))]
    )
    assert torch.equal(PerImageInferer()(images, exported)["score"], alone)


def test_the_card_travels_inside_the_file(onnx_file, tmp_path):
    assert runtimes.embedded_card(onnx_file) == '{"a": 1}'
    if runtimes.available("openvino"):
        xml = runtimes.save_openvino(
            runtimes.to_openvino(onnx_file), tmp_path / "model.xml", '{"b": 2}'
        )
        assert runtimes.embedded_card(xml) == '{"b": 2}'


def test_openvino_leaves_the_signal_stack_as_it_found_it(scorer, tmp_path):
    """Two compiled models freed in the order they were compiled: without
    :func:`runtimes.keep_signal_stack` the thread keeps a freed alternate signal stack, and the
    next signal handled on it (SIGCHLD, faulthandler) is a segmentation fault of the process."""
    import gc

    _needs("openvino")
    model = runtimes.to_openvino(runtimes.export_onnx(scorer, tmp_path / "model.onnx", SIZE))
    before = runtimes.signal_stack()
    first, second = runtimes.open_runtime(model), runtimes.open_runtime(model)
    assert runtimes.signal_stack() == before
    del first
    gc.collect()
    del second
    gc.collect()
    assert runtimes.signal_stack() == before


def test_the_tile_score_exports_with_its_statistics(scorer, images, tmp_path):
    """``tile_residual``: the per-tile statistics, the exponent, the sidedness and the source
    select are in the graph."""
    import copy

    from squid_monai.scoring import calibrate

    _needs("onnx")
    tiled = copy.deepcopy(scorer)
    tiled.score_source_code.fill_(2)
    tiled.tile_power.fill_(3.0)
    tiled.tile_two_sided.fill_(True)
    calibrate(tiled, [images[:6]])
    assert not torch.equal(tiled.tile_std, torch.ones_like(tiled.tile_std))
    exported = runtimes.ExportedScorer(
        runtimes.export_onnx(tiled, tmp_path / "tiled.onnx", SIZE), tiled, "onnx"
    )
    got, expected = exported(images)["score"], tiled(images)["score"]
    torch.testing.assert_close(got, expected, atol=FP32_TOLERANCE, rtol=0)
    assert not torch.allclose(expected, scorer(images)["score"], atol=1e-3)  # not the logit score


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_combined_score_exports_with_its_normal_tokens(scorer, images, tmp_path, fmt):
    """``combined``: the teacher, the second discriminator pass, the normal token bank and the
    evidence statistics are in the graph, and the export scores as eager PyTorch does."""
    import copy

    from squid_monai.scoring import calibrate

    _needs(fmt)
    combined = copy.deepcopy(scorer)
    combined.set_score_source("combined")
    calibrate(combined, [images[:6]])
    assert int(combined.normal_count) == 6
    path = runtimes.export_onnx(combined, tmp_path / "combined.onnx", SIZE)
    exported = runtimes.ExportedScorer(
        path if fmt == "onnx" else runtimes.to_openvino(path), combined, fmt
    )
    got, expected = exported(images)["score"], combined(images)["score"]
    torch.testing.assert_close(got, expected, atol=FP32_TOLERANCE, rtol=0)
    assert not torch.allclose(expected, scorer(images)["score"], atol=1e-3)  # not the logit score


def _model_folder(scorer, folder, fmt: str):
    """A trained-model folder as the export command leaves it: weights, recipe, and the ``fmt``
    export whose card says it meets the parity contract (as measured where it was made)."""
    import dataclasses

    from squid_monai.artifact import RECIPE_FILE, WEIGHTS_FILE, ModelCard
    from squid_monai.loading import save_network_config

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(scorer.state_dict(), folder / WEIGHTS_FILE)
    save_network_config(folder / RECIPE_FILE, "tiny")
    card = ModelCard.from_scorer(scorer, SIZE)
    card = dataclasses.replace(card, format=fmt, parity={"default": True})
    target = folder / EXPORT_FILES[fmt]
    if fmt == "onnx":
        runtimes.export_onnx(scorer, target, SIZE, card_json=card.to_json())
    else:
        onnx_path = runtimes.export_onnx(scorer, folder / "graph" / "model.onnx", SIZE)
        runtimes.save_openvino(runtimes.to_openvino(onnx_path), target, card.to_json())
    return folder / WEIGHTS_FILE


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("source", ["logit", "residual", "tile_residual", "combined"])
def test_auto_scores_with_an_export_only_where_it_meets_the_contract_here(
    scorer, images, tmp_path, fmt, source
):
    """Every shipped score source on every fp32 back-end ``auto`` may pick (issue 39): either
    the export ``auto`` picks scores within 1e-4 of PyTorch, or ``auto`` does not pick it."""
    import copy

    from squid_monai.loading import load_scorer
    from squid_monai.scoring import calibrate, parity

    _needs(fmt)
    model = copy.deepcopy(scorer)
    model.set_score_source(source)
    if source != "logit":
        calibrate(model, [images[:6]])
    weights = _model_folder(model, tmp_path, fmt)
    reference, chosen = load_scorer(weights), load_scorer(weights, backend="auto")
    if isinstance(chosen, runtimes.ExportedScorer):
        assert chosen.format == fmt
        for batch in (images, images[:1]):
            got, expected = chosen(batch)["score"], reference(batch)["score"]
            torch.testing.assert_close(got, expected, atol=FP32_TOLERANCE, rtol=0)
    else:  # refused: only because it misses the contract on this machine
        exported = runtimes.ExportedScorer(weights.with_name(EXPORT_FILES[fmt]), reference, fmt)
        assert parity.problem_here(reference, exported, SIZE, quantised=False) is not None


def test_auto_refuses_an_export_that_misses_the_contract_on_this_machine(
    scorer, tmp_path, monkeypatch, caplog
):
    """The card's parity was measured where the export was made; here the runtime's scores
    drift by 2e-4 (as OpenVINO 2026.4's did for the combined score on one machine): ``auto``
    scores with PyTorch and says why, an explicit back-end is still honoured."""
    from squid_monai.loading import load_scorer

    _needs("onnx")
    weights = _model_folder(scorer, tmp_path, "onnx")
    real = runtimes.open_runtime

    def drifting(model, threads=None):
        run = real(model, threads)
        return lambda x: [
            value + 2e-4 if key == "score" else value
            for key, value in zip(runtimes.OUTPUTS, run(x))
        ]

    monkeypatch.setattr(runtimes, "open_runtime", drifting)
    with caplog.at_level("WARNING"):
        chosen = load_scorer(weights, backend="auto")
    assert not isinstance(chosen, runtimes.ExportedScorer)
    assert "misses the fp32 parity contract on this machine" in caplog.text
    assert isinstance(load_scorer(weights, backend="onnx"), runtimes.ExportedScorer)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_an_export_older_than_the_domain_guard_still_scores_domain_not_recorded(
    fmt, onnx_file, scorer, images, tmp_path
):
    """A file exported before the guard has no ``domain_distance`` output: it scores as before,
    and its records say the domain was not recorded (never "in domain")."""
    import copy

    import onnx

    from squid_monai.scoring import score_images
    from squid_monai.scoring.domain import NOT_RECORDED, thumbnails

    _needs(fmt)
    guarded = copy.deepcopy(scorer)
    guarded.fit_domain(thumbnails(images))  # today's scorer has a guard; the old file does not
    model = onnx.load(str(onnx_file))
    kept = [o for o in model.graph.output if o.name != "domain_distance"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    source = tmp_path / "old.onnx" if fmt == "onnx" else runtimes.to_openvino(tmp_path / "old.onnx")
    old = runtimes.ExportedScorer(source, guarded, fmt)
    out = old(images)
    assert "domain_distance" not in out
    torch.testing.assert_close(out["score"], scorer(images)["score"], atol=FP32_TOLERANCE, rtol=0)
    assert {r.domain for r in score_images(old, images, pixels=False)} == {NOT_RECORDED}

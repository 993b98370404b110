"""Issue 11's measuring instruments: the in-painting metric, the heat maps' pointing game,
the smoothed selection metric, the weight EMA, the space-aware decoder memory and the curve-stability report."""

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from squid_monai.data.digitanatomy import inpainting_set
from squid_monai.handlers import WeightEMA
from squid_monai.methods.squid.networks.generator import DecoderMemory
from squid_monai.methods.squid.presets import build
from squid_monai.metrics import SmoothedAUC, inpainting_rates, pointing_rates, roc_auc
from squid_monai.workflow import curve_stability


def _cells(grid=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((1, 1, grid * size, grid * size)).astype(np.float32)


def test_inpainting_metric_on_a_hand_built_case():
    normal = _cells()
    anomalous = normal.copy()
    anomalous[..., 0:8, 8:16] = 0.0  # cell 1 blanked ("missing")
    cells, kinds = [[1]], ["missing"]
    # a reconstruction equal to the normal image in-paints; one equal to the input copies
    good = inpainting_rates(normal, normal, anomalous, cells, kinds)
    copy = inpainting_rates(anomalous, normal, anomalous, cells, kinds)
    assert good["inpainted/missing"] == 1.0 and good["inpainting_margin/missing"] == pytest.approx(
        1.0
    )
    assert copy["inpainted/missing"] == 0.0 and copy["inpainting_margin/missing"] == pytest.approx(
        -1.0
    )
    # a flat grey guess is not in-painting, even though it is nearer the normal cell than the blank
    grey = anomalous.copy()
    grey[..., 0:8, 8:16] = 0.5
    assert inpainting_rates(grey, normal, anomalous, cells, kinds)["inpainted/missing"] == 0.0
    # only the affected cells count: damage elsewhere does not change the result
    elsewhere = normal.copy()
    elsewhere[..., 16:24, 16:24] = 1.0
    assert inpainting_rates(elsewhere, normal, anomalous, cells, kinds)["inpainted/all"] == 1.0


def test_pointing_game_on_a_hand_built_case():
    maps = np.zeros((3, 24, 24), dtype=np.float32)
    maps[0, 0:8, 8:16] = 1.0  # all heat in cell 1
    maps[1, 16:24, 0:8] = 0.2  # a faint but large patch in cell 6 beats ...
    maps[1, 0, 0] = 1.0  # ... one hot pixel in cell 0: heat is summed per cell
    maps[2, 8:16, 8:16] = 1.0  # cell 4
    cells, kinds = [[1], [6, 7], [0]], ["missing", "misordered", "missing"]
    rates = pointing_rates(maps, cells, kinds)
    assert rates == {
        "pointing/missing": 0.5,
        "pointing/misordered": 1.0,
        "pointing/all": pytest.approx(2 / 3),
    }
    assert (
        pointing_rates(maps[:1], [[]], ["normal"]) == {}
    )  # an image with no affected cell is not counted
    with pytest.raises(ValueError, match="one cell list"):
        pointing_rates(maps, cells[:2], kinds)


def test_inpainting_set_pairs_each_anomaly_with_its_normal_counterpart():
    items = inpainting_set(2, seed=0, split="validation")
    assert [it["anomaly"] for it in items] == ["missing"] * 2 + ["misordered"] * 2 + [
        "flipped"
    ] * 2 + ["zero"] * 2
    for it in items:
        image, normal = it["image"][0], it["normal"][0]
        mask = np.zeros_like(image, dtype=bool)
        for c in it["cells"]:
            r, q = divmod(c, 3)
            mask[r * 32 : (r + 1) * 32, q * 32 : (q + 1) * 32] = True
        assert np.array_equal(image[~mask], normal[~mask])  # identical outside the affected cells
        assert not np.array_equal(image[mask], normal[mask])
        if it["anomaly"] == "flipped":
            r, q = divmod(it["cells"][0], 3)
            cell = np.s_[r * 32 : (r + 1) * 32, q * 32 : (q + 1) * 32]
            assert np.array_equal(image[cell], normal[cell][:, ::-1])


def test_smoothed_auc_averages_the_last_validations_and_resumes():
    metric = SmoothedAUC(window=2)
    labels = np.array([0, 0, 1, 1])
    epochs = [
        np.array([0.1, 0.2, 0.3, 0.4]),
        np.array([0.4, 0.1, 0.2, 0.3]),
        np.array([0.3, 0.4, 0.1, 0.2]),
    ]
    values = []
    for scores in epochs:
        metric.reset()
        metric.update((torch.tensor(scores), torch.tensor(labels)))
        values.append(metric.compute())
    aucs = [roc_auc(labels, s) for s in epochs]
    assert values == pytest.approx([aucs[0], np.mean(aucs[:2]), np.mean(aucs[1:])])
    resumed = SmoothedAUC(window=2)
    resumed.load_state_dict(metric.state_dict())
    resumed.reset()
    resumed.update((torch.tensor(epochs[0]), torch.tensor(labels)))
    assert resumed.compute() == pytest.approx(np.mean([aucs[2], aucs[0]]))


def _engine_that_moves(model: torch.nn.Module) -> Engine:
    def step(engine, batch):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)

    return Engine(step)


def test_weight_ema_updates_and_is_the_model_that_is_scored():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    start = [p.detach().clone() for p in model.parameters()]
    ema = WeightEMA(model, momentum=0.5, momentum_warmup=None, warmup_iters=None)
    engine = _engine_that_moves(model)
    ema.attach(engine)
    engine.run(
        [0, 1], max_epochs=1
    )  # two iterations: the model moves +1 twice; EMA p0+0.5, then p0+1.25
    for p0, p_live, p_ema in zip(start, model.parameters(), ema.scoring_model.parameters()):
        assert torch.allclose(p_live, p0 + 2)
        assert torch.allclose(p_ema, p0 + 1.25)
    # buffers are the live model's (the memory queue is never averaged)
    for b_live, b_ema in zip(model.buffers(), ema.scoring_model.buffers()):
        assert b_live.data_ptr() == b_ema.data_ptr()
    assert ema.scoring_model is not model


def test_weight_ema_off_scores_the_live_weights_and_warmup_follows_the_iteration():
    model = torch.nn.Linear(2, 2)
    assert WeightEMA(model, enabled="false").scoring_model is model
    ema = WeightEMA(model, momentum=0.02, momentum_warmup=0.5, warmup_iters=100)
    assert ema.momentum_at(1) == pytest.approx(0.5)
    assert ema.momentum_at(51) == pytest.approx(0.26)
    assert ema.momentum_at(100) == ema.momentum_at(5000) == pytest.approx(0.02)


def test_space_aware_decoder_memory_reads_only_its_own_tile_bank():
    torch.manual_seed(0)
    block = DecoderMemory(channels=2, spatial_size=4, windows=2, items=6, top_k=2, grid=2).eval()
    x = torch.rand(2 * 4, 2, 4, 4)  # 2 images x 4 tiles
    before = block(x)
    with torch.no_grad():
        block.memory.memory[4:8] += 1.0  # banks of tile 1 (its four windows)
    after = block(x)
    changed = (before - after).abs().flatten(1).amax(1).reshape(2, 4) > 0
    assert changed[:, 1].all() and not changed[:, [0, 2, 3]].any()
    shared = DecoderMemory(channels=2, spatial_size=4, windows=2, items=6, top_k=2)
    assert shared.memory.memory.shape[0] == 4


def test_generator_switch_builds_space_aware_decoder_memories():
    gen, _ = build("tiny", decoder_memory_space_aware=True)
    regions = {m.memory.memory.shape[0] for m in gen.student.memories}
    assert regions == {2 * 2 * 2 * 2}  # tiles x windows
    assert gen.teacher is not None and not list(gen.teacher.memories.parameters())


def test_curve_stability_leaves_out_the_warm_up():
    report = curve_stability({1: 0.5, 2: 0.6, 3: 0.8, 4: 0.8, 5: 0.7})
    assert report["val_auc_peak"] == 0.8 and report["val_auc_last"] == 0.7
    assert report["val_auc_drop_from_peak"] == pytest.approx(0.1)
    # 5 validations: the first round(0.3 * 5) = 2 are warm-up
    assert report["val_auc_std_after_warmup"] == pytest.approx(
        float(np.std([0.8, 0.8, 0.7])), abs=1e-4
    )


def test_queue_decoder_memory_holds_real_window_features_after_a_training_step():
    gen, _ = build("tiny", decoder_memory_space_aware=True, decoder_memory_kind="queue")
    gen.train()
    x = torch.rand(3, 1, 32, 32)
    out = gen(x)
    assert len(out["decoder_tokens"]) == 2
    gen.enqueue(out.get("tokens"), out["decoder_tokens"])
    for memory, tokens in zip(gen.student.memories, out["decoder_tokens"]):
        queue = memory.memory
        assert not list(memory.parameters())  # real features, not learnt items
        assert queue.size.item() == 3
        assert torch.equal(queue.memory[:, :3], tokens.transpose(0, 1))
    gen.eval()
    assert gen(x)["student"].shape == x.shape


def test_tile_residual_scores_the_worst_standardised_tile_fitted_on_normals_and_persists():
    from squid_monai.methods.squid.scorer import SQUIDScorer
    from squid_monai.scoring import calibrate

    torch.manual_seed(0)
    scorer = SQUIDScorer(*build("tiny"), score_source="tile_residual")
    grid = scorer.generator.grid
    normals = torch.rand(6, 1, 32, 32) * 0.2 + 0.4
    calibrate(scorer, [normals[:3], normals[3:]])  # two batches, one pass
    tiles = scorer(normals)["tile_residual"]
    assert tiles.shape == (6, grid * grid)
    assert torch.allclose(scorer.tile_mean, tiles.mean(0), atol=1e-6)
    assert torch.allclose(scorer.tile_std, tiles.std(0), atol=1e-6)
    # by definition: minus the largest standardised tile residual, then the shared calibration
    out = scorer(normals)
    expected = -((tiles - tiles.mean(0)) / tiles.std(0)).amax(1)
    assert torch.allclose(scorer.normality(out), expected, atol=1e-5)
    # one corrupted tile outranks a whole image made slightly worse everywhere
    local, diffuse = (
        normals[:1].clone(),
        normals[:1] + 0.45 / grid,
    )  # diffuse: 2.25 x the squared error in all
    step = 32 // grid
    local[..., :step, :step] += 0.3
    normality = scorer.normality(scorer(torch.cat([local, diffuse])))
    assert normality[0] < normality[1]
    scorer.score_source_code.fill_(1)  # the mean residual ranks them the other way round
    normality = scorer.normality(scorer(torch.cat([local, diffuse])))
    assert normality[0] > normality[1]
    scorer.score_source_code.fill_(2)
    reloaded = SQUIDScorer(*build("tiny"))
    reloaded.load_state_dict(scorer.state_dict())
    assert reloaded.score_source == "tile_residual" and torch.equal(
        reloaded.tile_std, scorer.tile_std
    )
    legacy = SQUIDScorer(*build("tiny"))
    legacy.load_state_dict(
        {k: v for k, v in scorer.state_dict().items() if not k.startswith("tile_")}
    )
    assert torch.equal(legacy.tile_std, torch.ones(grid * grid))  # saved before the tile score


def test_residual_score_source_ranks_by_the_residual_batch_independently_and_persists():
    from squid_monai.methods.squid.scorer import SQUIDScorer
    from squid_monai.scoring import calibrate

    torch.manual_seed(0)
    scorer = SQUIDScorer(*build("tiny"), score_source="residual")
    x = torch.rand(4, 1, 32, 32)
    x[2] = 1.0  # far from any reconstruction: the largest residual
    out = scorer(x)
    assert torch.equal(torch.argsort(out["score"]), torch.argsort(out["residual"]))
    assert out["score"].argmax() == 2
    alone = scorer(x[1:2])
    assert torch.allclose(alone["score"], out["score"][1:2], atol=1e-6)  # batch-independent
    mean, std = calibrate(scorer, [x[:2]])
    assert mean == pytest.approx(float(-out["residual"][:2].mean()), rel=1e-5)
    reloaded = SQUIDScorer(*build("tiny"))
    reloaded.load_state_dict(scorer.state_dict())
    assert reloaded.score_source == "residual"
    old = {k: v for k, v in scorer.state_dict().items() if k != "score_source_code"}
    legacy = SQUIDScorer(*build("tiny"), score_source="residual")
    legacy.load_state_dict(old)  # a model saved before the switch scored the logit
    assert legacy.score_source == "logit"
    with pytest.raises(ValueError, match="score_source"):
        SQUIDScorer(*build("tiny"), score_source="sharpness")


def test_validation_reports_the_papers_logit_beside_the_score_in_use():
    from squid_monai.engines import AnomalyEvaluator
    from squid_monai.methods.squid.scorer import SQUIDScorer
    from squid_monai.metrics import OptionalAUC

    torch.manual_seed(0)
    scorer = SQUIDScorer(*build("tiny"), score_source="tile_residual")
    batches = [
        {"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 0, 1])} for _ in range(2)
    ]
    evaluator = AnomalyEvaluator("cpu", batches, scorer, running_stats=False, residual_scores=True)
    outputs = []
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output)
    )
    for name, key in (("val_auc_logit", "score_logit"), ("val_auc_residual", "score_residual")):
        OptionalAUC(key).attach(evaluator, name)
    evaluator.run()
    logit = torch.cat([o["logit"] for o in outputs])
    assert torch.equal(torch.cat([o["score_logit"] for o in outputs]), -logit)
    labels = np.array([0, 1, 0, 1] * 2)
    assert evaluator.state.metrics["val_auc_logit"] == pytest.approx(
        roc_auc(labels, -logit.numpy())
    )
    residual = torch.cat([o["residual"] for o in outputs]).numpy()
    assert evaluator.state.metrics["val_auc_residual"] == pytest.approx(roc_auc(labels, residual))


def test_tile_power_is_the_exponent_of_the_tile_residual_and_persists():
    from squid_monai.methods.squid.scorer import SQUIDScorer

    torch.manual_seed(0)
    scorer = SQUIDScorer(*build("tiny"), score_source="tile_residual", tile_power=3.0)
    x = torch.rand(2, 1, 32, 32)
    out = scorer(x)
    step = 32 // scorer.generator.grid
    cubed = (x - out["reconstruction"]).abs().pow(3)
    expected = cubed.unfold(2, step, step).unfold(3, step, step).mean((-1, -2)).flatten(1)
    assert torch.allclose(out["tile_residual"], expected, atol=1e-7)
    reloaded = SQUIDScorer(*build("tiny"))
    reloaded.load_state_dict(scorer.state_dict())
    assert float(reloaded.tile_power) == 3.0
    assert torch.allclose(reloaded(x)["tile_residual"], out["tile_residual"], atol=1e-7)
    legacy = {k: v for k, v in scorer.state_dict().items() if k != "tile_power"}
    reloaded.load_state_dict(legacy)  # saved before the exponent existed: the squared residual
    squared = (
        (x - out["reconstruction"])
        .pow(2)
        .unfold(2, step, step)
        .unfold(3, step, step)
        .mean((-1, -2))
        .flatten(1)
    )
    assert torch.allclose(reloaded(x)["tile_residual"], squared, atol=1e-7)
    with pytest.raises(ValueError, match="tile_power"):
        SQUIDScorer(*build("tiny"), tile_power=0)

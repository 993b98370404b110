import pytest
import torch

from squid_monai.methods.squid.presets import build, get_config
from squid_monai.nn import tile, zero_tiles

ABLATIONS = {
    "no_space_aware_memory": dict(space_aware=False),
    "no_inpainting_block": dict(inpainting=False),
    "no_shrinkage": dict(shrinkage=False),
    "no_distillation": dict(distillation=False),
    "no_stop_gradient": dict(stop_gradient=False),
    "memory_matrix": dict(memory="matrix"),
    "no_masked_shortcut": dict(shortcut="none"),
    "soft_masked_shortcut": dict(shortcut="soft"),
    "no_decoder_memory": dict(decoder_memory=False),
    "conv_instead_of_transformer": dict(context="conv"),
    "pixel_level_inpainting": dict(pixel_mask_ratio=0.25),
    "zero_padding_neighbours": dict(mask_out_of_grid=False),
}


def _image(preset="tiny", batch=2):
    size = get_config(preset)["image_size"]
    return torch.rand(batch, 1, size, size)


def test_paper_parameter_counts_match_the_authors():
    gen, disc = build("paper")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(gen) == pytest.approx(44.47e6, rel=0.01)
    assert count(disc) == pytest.approx(0.68e6, rel=0.01)
    assert count(gen.encoder) == pytest.approx(7.86e6, rel=0.01)
    assert count(gen.inpainting) == pytest.approx(19.03e6, rel=0.01)
    assert count(gen.student) == pytest.approx(13.71e6, rel=0.01)
    assert count(gen.teacher) == pytest.approx(3.88e6, rel=0.01)


def test_training_outputs():
    gen, _ = build("tiny")
    x = _image()
    out = gen.train()(x)
    assert out["student"].shape == x.shape and out["teacher"].shape == x.shape
    assert 0 <= out["student"].min() and out["student"].max() <= 1
    assert (
        len(out["student_features"])
        == len(out["teacher_features"])
        == len(get_config("tiny")["channels"]) - 1
    )
    for s, t in zip(out["student_features"], out["teacher_features"]):
        assert s.shape == t.shape
    assert out["tokens"].shape[:2] == (2, 4) and not out["tokens"].requires_grad


def test_inference_skips_the_teacher_and_builds_no_graph():
    gen, _ = build("tiny")
    calls = []
    gen.teacher.register_forward_hook(lambda *a: calls.append(1))
    gen.eval()
    out = gen(_image())
    assert set(out) == {"student"} and not calls
    rec = gen.reconstruct(_image())
    assert not rec.requires_grad and rec.grad_fn is None
    with pytest.raises(RuntimeError, match="eval"):
        gen.train().reconstruct(_image())


def _encoder_grad(gen, loss_fn):
    gen.zero_grad()
    loss_fn(gen.train()(_image())).backward()
    return sum(p.grad.abs().sum() for p in gen.encoder.parameters() if p.grad is not None)


def test_stop_gradient_teacher_losses_give_the_encoder_no_gradient():
    teacher_losses = lambda out: (
        out["teacher"].mean() + sum(t.pow(2).mean() for t in out["teacher_features"])
    )
    gen, _ = build("tiny")
    assert _encoder_grad(gen, teacher_losses) == 0
    assert (
        sum(p.grad.abs().sum() for p in gen.teacher.parameters()) > 0
    )  # the teacher itself learns
    gen, _ = build("tiny", stop_gradient=False)
    assert _encoder_grad(gen, teacher_losses) > 0


def test_enqueue_fills_the_queue_with_the_batch_tokens():
    gen, _ = build("tiny")
    out = gen.train()(_image(batch=3))
    gen.enqueue(out["tokens"])
    queue = gen.inpainting.memory
    assert queue.size.item() == 3
    assert torch.equal(queue.memory[:, :3], out["tokens"].transpose(0, 1))


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_trains_and_scores(name):
    gen, disc = build("tiny", **ABLATIONS[name])
    x = _image()
    out = gen.train()(x)
    loss = (out["student"] - x).pow(2).mean() + disc(out["student"]).mean()
    if "teacher" in out:
        loss = loss + (out["teacher"] - x).pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in gen.parameters() if p.grad is not None)
    gen.enqueue(out.get("tokens"))
    assert gen.eval().reconstruct(x).shape == x.shape


def test_ablation_switches_change_the_network():
    assert build("tiny", distillation=False)[0].teacher is None
    assert build("tiny", inpainting=False)[0].inpainting is None
    assert build("tiny", space_aware=False)[0].inpainting.memory.memory.shape[0] == 1
    assert build("tiny")[0].inpainting.memory.memory.shape[0] == 4
    assert isinstance(
        build("tiny", memory="matrix")[0].inpainting.memory.memory, torch.nn.Parameter
    )
    assert not any(
        "DecoderMemory" in type(m).__name__
        for m in build("tiny", decoder_memory=False)[0].modules()
    )


def test_presets_and_overrides():
    assert get_config("paper")["image_size"] == 128 and get_config("paper")["tiles"] == 2
    assert (
        get_config("digitanatomy")["image_size"] == 96 and get_config("digitanatomy")["tiles"] == 3
    )
    assert get_config("paper", queue_slots=50)["queue_slots"] == 50
    with pytest.raises(KeyError, match="unknown preset"):
        get_config("nope")
    with pytest.raises(KeyError, match="unknown network setting"):
        get_config("paper", queue_size=3)
    with pytest.raises(ValueError, match="tiles"):
        build("tiny", image_size=30)


def test_switches_from_the_command_line_are_real_bools():
    """`--network_overrides '{"inpainting": false}'` arrives as the string "false"."""
    assert get_config("tiny", inpainting="false")["inpainting"] is False
    assert build("tiny", inpainting="false")[0].inpainting is None
    with pytest.raises(TypeError, match="switch"):
        get_config("tiny", space_aware="no thanks")


def test_probes_are_per_image_and_move_with_the_input():
    """The candidate scores inside SQUID: one value per image, the same alone as in a batch,
    and not constant in the input."""
    torch.manual_seed(0)
    generator, _ = build("tiny")
    generator.train()
    images = torch.rand(4, 1, 32, 32)
    generator.enqueue(generator(images)["tokens"])
    generator.eval()
    probes = generator.probes(images)
    assert set(probes) == {"memory_distance", "inpainting_shift", "teacher_student"}
    for i in range(4):
        alone = generator.probes(images[i : i + 1])
        for key, value in probes.items():
            torch.testing.assert_close(alone[key][0], value[i], rtol=1e-5, atol=1e-7)
    assert all(bool((v >= 0).all()) for v in probes.values())
    assert not torch.allclose(
        probes["teacher_student"], generator.probes(torch.zeros(4, 1, 32, 32))["teacher_student"]
    )
    with pytest.raises(RuntimeError, match="eval"):
        generator.train().probes(images)


def _zeroed_tiles(images: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid * grid) bool: which tiles of each image are all zero."""
    return (tile(images, grid).flatten(1) == 0).all(1).reshape(len(images), grid * grid)


@pytest.mark.parametrize("grid", [2, 4])  # the paper's chest grid, and Figure 9's finest
def test_zero_tiles_zeroes_exactly_a_quarter_and_leaves_the_rest_untouched(grid):
    x = torch.rand(64, 1, 32, 32) + 0.1  # no zero pixel of its own
    out = zero_tiles(x, grid, grid * grid // 4)
    zeroed = _zeroed_tiles(out, grid)
    assert (zeroed.sum(1) == grid * grid // 4).all()
    kept = ~zeroed
    assert torch.equal(tile(out, grid)[kept.flatten()], tile(x, grid)[kept.flatten()])
    assert (
        len({tuple(z.tolist()) for z in zeroed}) > 1
    )  # drawn per image, not one pattern for the batch


def test_pixel_mask_ratio_masks_a_quarter_of_the_training_input_only():
    gen, _ = build("tiny", pixel_mask_ratio=0.25)  # 2 x 2 tiles: one of four per image
    seen = []
    gen.encoder.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].detach())
    )
    x = torch.rand(8, 1, 32, 32) + 0.1
    gen.train()(x)
    zeroed = (seen[0].flatten(1) == 0).all(1).reshape(8, 4)
    assert (zeroed.sum(1) == 1).all()
    assert torch.equal(seen[0][~zeroed.flatten()], tile(x, 2)[~zeroed.flatten()])
    seen.clear()
    gen.eval()(x)
    assert torch.equal(seen[0], tile(x, 2))  # inference sees the whole image
    assert build("tiny")[0].masked_tiles == 0
    for bad in (1.0, 0.1, -0.25):  # every tile; rounds to no tile of 4; negative
        with pytest.raises(ValueError, match="pixel_mask_ratio"):
            build("tiny", pixel_mask_ratio=bad)


def test_output_bias_starts_both_decoders_at_that_logit_and_changes_nothing_else():
    """``output_bias`` sets the initial bias of the student's and the teacher's output
    convolution and nothing else: every other initial weight is the default build's (same
    seed), and a zero feature map decodes to sigmoid(bias) everywhere."""
    torch.manual_seed(0)
    default, _ = build("tiny")
    torch.manual_seed(0)
    biased, _ = build("tiny", output_bias=-1.2)
    for decoder in (biased.student, biased.teacher):
        assert torch.equal(decoder.head.bias, torch.full_like(decoder.head.bias, -1.2))
        zero = torch.zeros(1, decoder.head.in_channels, 4, 4)
        assert torch.allclose(torch.sigmoid(decoder.head(zero)), torch.sigmoid(torch.tensor(-1.2)))
    a, b = default.state_dict(), biased.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"student.head.bias", "teacher.head.bias"}
    assert not torch.equal(
        default.student.head.bias, biased.student.head.bias
    )  # the default is PyTorch's init

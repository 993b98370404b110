"""Random erasing of training inputs: what it erases, and that the trainer keeps the loss
targets and the memory queue clean."""

import pytest
import torch

from squid_monai.methods.squid.erasing import erase_random_rectangles
from squid_monai.methods.squid.presets import build
from squid_monai.methods.squid.trainer import SQUIDTrainer


def test_erases_one_rectangle_in_the_given_share_of_the_batch():
    torch.manual_seed(0)
    image = torch.rand(8, 1, 48, 40) + 0.5  # no pixel is 0 before erasing
    erased, clean = erase_random_rectangles(image, 0.5, size=(0.25, 0.5), fill=0.0)
    assert clean.sum() == 4 and torch.equal(erased[clean], image[clean])
    for i in torch.nonzero(~clean).flatten():
        hole = erased[i, 0] == 0
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        # one filled axis-aligned rectangle, within the size bounds, the rest untouched
        assert (
            hole.sum()
            == len(rows) * len(cols)
            == hole[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].sum()
        )
        assert 12 <= len(rows) <= 24 and 10 <= len(cols) <= 20
        assert torch.equal(erased[i, 0][~hole], image[i, 0][~hole])
    assert torch.all(image >= 0.5)  # the input batch is not modified


def test_zero_share_is_the_identity_and_one_image_always_stays_clean():
    image = torch.rand(4, 1, 16, 16)
    same, clean = erase_random_rectangles(image, 0.0)
    assert same is image and clean.all()
    _, clean = erase_random_rectangles(image, 0.99)
    assert clean.sum() == 1
    _, clean = erase_random_rectangles(image[:1], 0.9)
    assert clean.all()


@pytest.mark.parametrize(
    "fraction, size", [(1.0, (0.1, 0.3)), (-0.1, (0.1, 0.3)), (0.5, (0.4, 0.2)), (0.5, (0.0, 0.3))]
)
def test_bad_settings_are_named(fraction, size):
    gen, disc = build("tiny")
    opts = [torch.optim.Adam(m.parameters(), 1e-4) for m in (gen, disc)]
    with pytest.raises(ValueError, match="input_erasing|erasing_size"):
        SQUIDTrainer("cpu", 1, [], gen, disc, *opts, input_erasing=fraction, erasing_size=size)


def test_trainer_feeds_erased_inputs_but_clean_targets_and_clean_tokens():
    torch.manual_seed(0)
    gen, disc = build("tiny")
    image = torch.rand(4, 1, 32, 32) + 0.5
    seen, outputs = [], []
    gen.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    gen.register_forward_hook(lambda m, args, out: outputs.append(out["student"].detach().float()))
    opts = [torch.optim.Adam(m.parameters(), 1e-4) for m in (gen, disc)]
    trainer = SQUIDTrainer("cpu", 1, [{"image": image}], gen, disc, *opts, input_erasing=0.5)
    trainer.run()
    erased = (seen[0] == 0).flatten(1).any(1)
    assert erased.sum() == 2 and torch.equal(seen[0][~erased], image[~erased])
    # two clean images' tokens were written into the queue, not four
    assert gen.inpainting.memory.size.item() == 2
    # the student's loss is measured against the clean batch, not against its erased input
    mse = torch.nn.functional.mse_loss
    assert trainer.state.output["loss_student"] == pytest.approx(
        float(mse(outputs[0], image)), rel=1e-6
    )
    assert float(mse(outputs[0], image)) != pytest.approx(float(mse(outputs[0], seen[0])), rel=1e-3)

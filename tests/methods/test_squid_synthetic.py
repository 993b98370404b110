"""SQUID with synthetic lesions (the ``synthetic_anomaly`` switch, SQUID joined with
AnatPaste): off, training is the paper's, bit for bit; on, the generator's input differs from
its clean target only inside each image's lung field, the loss targets and the queue stay
clean; and the bundle's hybrid config wires it (tile-residual score)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from squid_monai.methods.squid.erasing import paste_lesions
from squid_monai.methods.squid.presets import build
from squid_monai.methods.squid.trainer import SQUIDTrainer
from squid_monai.transforms.anatomy import lung_field, paste_transform

from ..trained_bundle import CONFIGS
from ..transforms.test_anatomy import synthetic_radiograph

SIZE = 32  # SQUID's tiny preset


def _chests(n: int = 4) -> torch.Tensor:
    return torch.stack([torch.as_tensor(synthetic_radiograph(SIZE, s)[0]) for s in range(n)])


def _train_once(networks, image, **switches):
    gen, disc = networks
    opts = [torch.optim.Adam(m.parameters(), 1e-4) for m in (gen, disc)]
    trainer = SQUIDTrainer("cpu", 1, [{"image": image}], gen, disc, *opts, **switches)
    trainer.run()
    return trainer


def test_switch_off_is_the_papers_training_bit_for_bit():
    torch.manual_seed(0)
    networks = build("tiny")
    twin = copy.deepcopy(networks)
    image = _chests()
    seen = []
    networks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(1)
    default = _train_once(networks, image)
    torch.manual_seed(1)
    numpy_state = np.random.get_state()[1].copy()
    off = _train_once(twin, image, synthetic_anomaly="none", synthetic_fraction=0.5)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # off draws nothing
    assert torch.equal(seen[0], image)  # the generator sees the clean batch
    for a, b in zip(networks, twin):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert default.state.output == off.state.output


def test_pasted_inputs_differ_from_the_target_only_inside_the_lung_field():
    torch.manual_seed(0)
    gen, disc = build("tiny")
    image = _chests()
    seen, outputs = [], []
    gen.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    gen.register_forward_hook(lambda m, args, out: outputs.append(out["student"].detach().float()))
    trainer = _train_once((gen, disc), image, synthetic_anomaly="anatpaste", synthetic_fraction=0.5)
    inputs = seen[0]
    changed = (inputs != image).flatten(1).any(1)
    assert changed.sum() == 2  # half the batch, the other half clean
    for clean, given in zip(image, inputs):
        field = torch.as_tensor(lung_field(clean))
        assert torch.equal(given[0][~field], clean[0][~field])
    # the two unchanged images' tokens were written into the queue, not four
    assert gen.inpainting.memory.size.item() == 2
    # the student's loss is against the clean batch, not its pasted input
    mse = torch.nn.functional.mse_loss
    assert trainer.state.output["loss_student"] == pytest.approx(
        float(mse(outputs[0], image)), rel=1e-6
    )


def test_paste_lesions_keeps_one_image_clean_and_names_bad_settings():
    image = _chests(3)
    transform = paste_transform("cutpaste")
    pasted, clean = paste_lesions(image, 0.99, transform)
    assert clean.sum() == 1 and torch.equal(pasted[clean], image[clean])
    same, clean = paste_lesions(image, 0.0, transform)
    assert same is image and clean.all()
    gen, disc = build("tiny")
    opts = [torch.optim.Adam(m.parameters(), 1e-4) for m in (gen, disc)]
    with pytest.raises(ValueError, match="synthetic_fraction"):
        SQUIDTrainer("cpu", 1, [], gen, disc, *opts, synthetic_fraction=1.0)
    with pytest.raises(ValueError, match="paste must be one of"):
        SQUIDTrainer("cpu", 1, [], gen, disc, *opts, synthetic_anomaly="lesion")


def test_the_hybrid_config_switches_it_on_and_scores_the_residual():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(
        [str(CONFIGS / "train.json"), str(CONFIGS / "methods" / "squid_anatpaste.json")]
    )
    trainer = parser.get("train#trainer")
    assert trainer["synthetic_anomaly"] == "@synthetic_anomaly"
    assert parser.get_parsed_content("synthetic_anomaly") == "anatpaste"
    assert parser.get("score_source") == "tile_residual" and parser.get("family") == "squid"
    plain = ConfigParser()
    plain.read_config(str(CONFIGS / "train.json"))
    assert "synthetic_anomaly" not in plain.get("train#trainer")  # default off: the paper's

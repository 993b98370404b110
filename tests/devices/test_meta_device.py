"""Finding 1 of issue 42: every object the training configs build sits on ``@device``.

Each config set (SQUID's train.json, each family's method config, the multi-GPU config) is
parsed with ``device = meta``: every parameter and buffer of every network, of the scorer and
of the EMA copy must then be on ``meta``. A scorer whose own buffers (calibration, tile and
evidence statistics, normal tokens) stay on the CPU fails its first validation on a GPU."""

import pytest

from .helpers import CONFIG_SETS, off_device, parser


@pytest.mark.parametrize("name", sorted(CONFIG_SETS))
def test_every_network_scorer_and_ema_copy_is_on_the_configured_device(name, tmp_path):
    parsed = parser(CONFIG_SETS[name], tmp_path, device="$torch.device('meta')")
    ema = parsed.get_parsed_content("ema_handler")
    modules = {
        **{f"network {i}": net for i, net in enumerate(parsed.get_parsed_content("networks"))},
        "scorer": parsed.get_parsed_content("scorer"),
        "EMA copy": ema.ema_model,
        "score_model": parsed.get_parsed_content("score_model"),
    }
    stray = {what: off_device(module, "meta") for what, module in modules.items()}
    assert not {what: names for what, names in stray.items() if names}

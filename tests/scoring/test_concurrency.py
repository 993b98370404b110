"""Scoring cannot change the model (issue 39, finding 1): a loaded scorer is in inference mode
by construction, ``raw`` works on it directly, and concurrent calls on one scorer (a server's
threads) give bit-identical answers and leave every weight and buffer as it was. The served
model under parallel requests: tests/handlers/test_mlflow_serving.py."""

from __future__ import annotations

import threading

import torch

from squid_monai.loading import build_scorer, load_scorer, save_network_config
from squid_monai.scoring import calibrate

SIZE = 32  # the tiny preset


def _state(scorer) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in scorer.state_dict().items()}


def _changed(scorer, before: dict[str, torch.Tensor]) -> list[str]:
    return [
        key for key, value in scorer.state_dict().items() if not torch.equal(value, before[key])
    ]


def _loaded(tmp_path, score_source: str = "combined"):
    """A calibrated tiny SQUID saved as the bundle saves it, then loaded as every consumer does."""
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    scorer.set_score_source(score_source)  # a buffer, saved with the weights
    calibrate(scorer, [torch.rand(4, 1, SIZE, SIZE)])
    torch.save(scorer.state_dict(), tmp_path / "model.pt")
    save_network_config(tmp_path / "network.json", "tiny")
    return load_scorer(tmp_path / "model.pt")


def test_a_loaded_scorer_is_in_inference_mode_and_raw_works_on_it(tmp_path):
    scorer = _loaded(tmp_path)
    assert [name for name, m in scorer.named_modules() if m.training] == []
    before = _state(scorer)
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    raw = scorer.raw(images)  # the combined source's path refuses training mode
    assert torch.equal(raw["reconstruction"], scorer(images)["reconstruction"])
    assert _changed(scorer, before) == []


def test_a_scorer_built_around_training_networks_scores_them_in_eval_mode():
    """The bundle shares the networks with the trainer, which switches them to training each
    iteration: scoring switches them to eval and leaves them there (never back)."""
    scorer = build_scorer("tiny")
    scorer.generator.train()
    before = _state(scorer)
    image = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    first = scorer(image)["score"]
    assert not scorer.generator.training and _changed(scorer, before) == []
    assert torch.equal(scorer(image)["score"], first)


def test_concurrent_calls_give_bit_identical_answers_and_leave_the_state_unchanged(tmp_path):
    scorer = _loaded(tmp_path, score_source="logit")
    images = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    expected = scorer(images)
    before = _state(scorer)
    answers: list[dict[str, torch.Tensor]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def work() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(6):
                answers.append(scorer(images))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            failures.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and len(answers) == 24
    for out in answers:
        for key in ("score", "logit", "reconstruction"):
            assert torch.equal(out[key], expected[key]), key
    assert _changed(scorer, before) == []

import torch

from squid_monai.methods.squid.networks import SQUIDDiscriminator


def _trained_disc():
    disc = SQUIDDiscriminator(image_size=64, channels=(8, 16, 16, 16))
    disc.train()
    for _ in range(3):
        disc(torch.rand(8, 1, 64, 64) * 0.5)  # running statistics away from their defaults
    return disc.eval()


def test_score_does_not_depend_on_the_other_images_in_the_batch():
    disc = _trained_disc()
    images = torch.rand(5, 1, 64, 64)
    alone = torch.cat([disc(images[i : i + 1]) for i in range(5)])
    together = disc(images)
    shuffled = disc(images[[4, 2, 0, 1, 3]])
    assert torch.allclose(alone, together, atol=1e-5)
    assert torch.allclose(shuffled, together[[4, 2, 0, 1, 3]], atol=1e-5)


def test_scoring_never_changes_running_statistics():
    disc = _trained_disc()
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    with torch.no_grad():
        disc(torch.rand(4, 1, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in disc.state_dict().items())


def test_per_image_scoring_is_instance_normalisation_and_switchable():
    disc = _trained_disc()
    image = torch.rand(1, 1, 64, 64)
    per_image = disc(image)
    disc.per_image_norm = False
    assert not disc.per_image_norm
    running = disc(image)
    assert not torch.allclose(per_image, running)
    # per-image scoring equals what train-mode BN computes on a batch of one (the authors' way)
    disc.per_image_norm = True
    reference = SQUIDDiscriminator(image_size=64, channels=(8, 16, 16, 16))
    reference.load_state_dict(disc.state_dict())
    assert torch.allclose(reference.train()(image), per_image, atol=1e-5)


def test_instance_norm_variant_and_logit_shape():
    disc = SQUIDDiscriminator(image_size=64, channels=(8, 16, 16, 16), norm="instance")
    assert disc(torch.rand(3, 1, 64, 64)).shape == (3, 1)

import torch

from squid_monai.loading import build_scorer


def random_scorer():
    """The tiny preset's scorer with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    for m in scorer.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return scorer.eval()

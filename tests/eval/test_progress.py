import re

import torch
from torch import nn

from selfsup.eval import extract_features, train_linear_probe


class Flat(nn.Module):
    """A stand-in encoder with timm's CNN interface: features = the mean of each channel."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x


def test_feature_extraction_and_linear_probe_report_their_count_and_time(capsys):
    loader = [(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4)) for _ in range(3)]
    features, labels = extract_features(
        Flat(), loader, lambda x: x.float(), "avg", "cpu", description="toy: training features"
    )
    assert features.shape == (12, 3) and labels.shape == (12,)
    out = capsys.readouterr().out
    assert re.search(r"toy: training features: 12 images in \d+\.\d s", out), out
    train_linear_probe(torch.randn(20, 3), torch.arange(20) % 2, 2, epochs=3, description="toy: linear probe")
    assert re.search(r"toy: linear probe: 3 epochs in \d+\.\d s", capsys.readouterr().out)
    # without a description, nothing is printed
    extract_features(Flat(), loader, lambda x: x.float(), "avg", "cpu")
    train_linear_probe(torch.randn(20, 3), torch.arange(20) % 2, 2, epochs=1)
    assert capsys.readouterr().out == ""

"""DINOHead: structure, parameter names, flags, normalised bottleneck, initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinov3_hf.ssl.heads import DINOHead


def test_structure_and_parameter_names():
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, n_layers=3)
    shapes = {name: tuple(p.shape) for name, p in head.named_parameters()}
    assert shapes == {
        "mlp.0.weight": (24, 16),
        "mlp.0.bias": (24,),
        "mlp.2.weight": (24, 24),
        "mlp.2.bias": (24,),
        "mlp.4.weight": (8, 24),
        "mlp.4.bias": (8,),
        "last_layer.weight": (32, 8),
    }
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert head.last_layer.bias is None
    assert len(DINOHead(16, 32, 24, 8, n_layers=5).mlp) == 9
    single = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, n_layers=1)
    assert set(dict(single.named_parameters())) == {"mlp.weight", "mlp.bias", "last_layer.weight"}
    with pytest.raises(ValueError, match="n_layers"):
        DINOHead(16, 32, n_layers=0)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_forward_shapes_and_flags(n_layers):
    torch.manual_seed(0)
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, n_layers=n_layers)
    x = torch.randn(5, 7, 16)
    scores = head(x)
    assert scores.shape == (5, 7, 32)
    bottleneck = head(x, no_last_layer=True)
    assert bottleneck.shape == (5, 7, 8)
    torch.testing.assert_close(bottleneck.norm(dim=-1), torch.ones(5, 7))
    torch.testing.assert_close(head(bottleneck, only_last_layer=True), scores)
    torch.testing.assert_close(scores, bottleneck @ head.last_layer.weight.t())
    with pytest.raises(ValueError, match="mutually exclusive"):
        head(x, no_last_layer=True, only_last_layer=True)


def test_low_precision_forward():
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8).to(torch.bfloat16)
    out = head(torch.randn(3, 16, dtype=torch.bfloat16), no_last_layer=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float().norm(dim=-1), torch.ones(3), atol=1e-2, rtol=0)


def test_init_statistics():
    torch.manual_seed(0)
    head = DINOHead(256, 512, hidden_dim=512, bottleneck_dim=128)
    for name, p in head.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        else:
            assert abs(p.std().item() - 0.02) < 0.002, name
            assert abs(p.mean().item()) < 0.002, name
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(1.0)
    head.init_weights()
    assert torch.count_nonzero(head.mlp[0].bias) == 0 and head.last_layer.weight.std() > 0.01


def test_normalized_prototypes_give_cosine_scores_and_init_std_is_configurable():
    torch.manual_seed(0)
    head = DINOHead(16, 4000, hidden_dim=32, bottleneck_dim=64, normalize_prototypes=True, last_layer_init_std=0.1)
    assert abs(head.last_layer.weight.std().item() - 0.1) < 0.005
    assert abs(head.mlp[0].weight.std().item() - 0.02) < 0.002  # the MLP keeps the official init
    x = torch.randn(5, 16)
    bottleneck = head(x, no_last_layer=True)
    expected = bottleneck @ torch.nn.functional.normalize(head.last_layer.weight, dim=-1).t()
    torch.testing.assert_close(head(x), expected)
    assert head(x).abs().max() <= 1 + 1e-6
    plain = DINOHead(16, 8, hidden_dim=32, bottleneck_dim=64)
    torch.testing.assert_close(plain(x), plain(x, no_last_layer=True) @ plain.last_layer.weight.t())

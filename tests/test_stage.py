import torch

from pocketnet.evaluation.verification import embed_fused
from pocketnet.models.backbone import build_backbone


def test_flip_fused_embedding_equals_the_sum_of_both_views():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 32, 32, channels=(8, 16, 32, 64), stem_width=8)
    backbone.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(x) + backbone(x.flip(3))
        fused = embed_fused(backbone, x)
    assert fused.shape == (5, 32)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)

"""transform on torchvision's classification models, built by torchvision's own classes
(small widths or small configs, no weights downloaded): transform -> train step ->
materialize gives the same outputs -> randfx.save -> randfx.load into a differently
initialised model gives identical outputs.

torchvision imports only beside a torch build it was made for: the PyPI wheels do not
load next to the CPU build CI installs (`torch==2.13.0`), so there these tests skip.
They run with, e.g., `pip install torch==2.14.1 torchvision==0.29.1 pillow`.
"""

import pytest
import torch

import randfx
from randfx.modules import SeededLayer, SeededMultiheadAttention

models = pytest.importorskip("torchvision.models")

from test_models import DEVICES  # noqa: E402

SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                 mlp_dim=64)
SMALL_SWIN = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                  window_size=[4, 4])


def swin_v2():
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2
    return models.SwinTransformer(**SMALL_SWIN, num_classes=10, block=SwinTransformerBlockV2,
                                  downsample_layer=PatchMergingV2)


def convnext():
    from torchvision.models.convnext import CNBlockConfig
    return models.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                           num_classes=10)


# name: (builder, input side); sides below 64 give some of these models (randfx or not)
# non-finite eval outputs after a step: BatchNorm over a 1x1 map of two images
BUILDERS = {
    "resnet18": (lambda: models.resnet18(num_classes=10), 64),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10, width_mult=0.25), 64),
    # Hardswish(inplace=True) right after seeded convs and a Linear
    "mobilenet_v3_small": (lambda: models.mobilenet_v3_small(num_classes=10, width_mult=0.25),
                           64),
    "efficientnet_b0": (lambda: models.efficientnet_b0(num_classes=10), 64),
    "regnet_y_400mf": (lambda: models.regnet_y_400mf(num_classes=10), 64),
    "shufflenet_v2": (lambda: models.shufflenet_v2_x0_5(num_classes=10), 64),
    "squeezenet": (lambda: models.squeezenet1_1(num_classes=10), 64),
    "densenet121": (lambda: models.densenet121(num_classes=10), 64),
    "googlenet": (lambda: models.googlenet(num_classes=10, aux_logits=False,
                                           init_weights=True), 64),
    "mnasnet": (lambda: models.mnasnet0_5(num_classes=10), 64),  # checks its state version
    "vit": (lambda: models.VisionTransformer(**SMALL_VIT, num_classes=10), 32),
    "swin": (lambda: models.SwinTransformer(**SMALL_SWIN, num_classes=10), 32),
    "swin_v2": (swin_v2, 32),
    "convnext": (convnext, 32),
    "maxvit": (lambda: models.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2,
                                     block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                     stochastic_depth_prob=0.0, num_classes=10), 32),
}


def images(side, device):
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_torchvision_model_trains_materializes_and_round_trips(name, device, tmp_path):
    build, side = BUILDERS[name]
    config = randfx.Config("random_base_lora", rank=2, lora_alpha=4, seed=5)
    torch.manual_seed(0)
    source = build()
    model = randfx.transform(source, config).to(device)
    assert type(model) is type(source)
    assert any(isinstance(m, SeededLayer) for m in model.modules())
    x = images(side, device)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model(x).pow(2).mean().backward()
    optimizer.step()
    lora_B = [p for n, p in model.named_parameters() if n.endswith("lora_B")]
    assert lora_B and any(p.abs().sum() > 0 for p in lora_B), "the step moved no adapter"

    model.eval()
    with torch.no_grad():
        reference = model(x)
        assert reference.isfinite().all()
        dense = randfx.materialize(model).eval()
        torch.testing.assert_close(dense(x), reference, atol=1e-4, rtol=1e-4)

    path = tmp_path / f"{name}.rfx"
    randfx.save(model, path)

    def fresh():
        torch.manual_seed(1)  # differently initialised: load must overwrite all of it
        return build()

    loaded = randfx.load(path, like=fresh).to(device).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), reference)


def test_weights_torchvision_reads_directly_are_generated_at_the_read():
    """ViT's nn.MultiheadAttention applies its in_proj_weight in its own forward and reads
    out_proj's weight inside F.multi_head_attention_forward; Swin's attention passes
    qkv's and proj's weights to a function. All are seeded and generate their weight at
    the read."""
    vit = randfx.transform(models.VisionTransformer(**SMALL_VIT, num_classes=10),
                           randfx.Config("frozen"))
    attention = "encoder.layers.encoder_layer_0.self_attention"
    assert {attention, attention + ".out_proj"} <= set(vit.randfx_report.read_directly)
    assert isinstance(vit.encoder.layers[0].self_attention, SeededMultiheadAttention)
    assert isinstance(vit.encoder.layers[0].self_attention.out_proj, SeededLayer)
    assert not any(k.endswith("in_proj_weight") for k in vit.state_dict())
    swin = randfx.transform(models.SwinTransformer(**SMALL_SWIN, num_classes=10),
                            randfx.Config("frozen"))
    assert {"features.1.0.attn.qkv", "features.1.0.attn.proj"} <= set(
        swin.randfx_report.read_directly)
    assert isinstance(swin.features[1][0].attn.qkv, SeededLayer)

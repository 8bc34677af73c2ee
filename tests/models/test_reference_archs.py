"""The reference architectures: torchvision's parameter names and shapes, the published parameter
counts, the paper's computation (checked against a functional re-implementation from the weights alone),
activations hookable one module per use, and checkpoints that load without --trust-model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xaibench.core.errors import InputError
from xaibench.models import ModelMeta, archs, load_model, save_checkpoint

SMALL_VIT = {"image_size": 32, "patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 12,
             "num_classes": 3, "in_channels": 2}


def batch_norm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet18(classes: int, channels: int = 3) -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 state_dict, name -> shape, in its order (written from its layout)."""
    shapes = {"conv1.weight": (64, channels, 7, 7)} | batch_norm("bn1", 64)
    width = 64
    for stage, out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix, inp = f"layer{stage}.{block}", width if block == 0 else out
            shapes |= {f"{prefix}.conv1.weight": (out, inp, 3, 3)} | batch_norm(f"{prefix}.bn1", out)
            shapes |= {f"{prefix}.conv2.weight": (out, out, 3, 3)} | batch_norm(f"{prefix}.bn2", out)
            if block == 0 and stage > 1:
                shapes |= {f"{prefix}.downsample.0.weight": (out, inp, 1, 1)}
                shapes |= batch_norm(f"{prefix}.downsample.1", out)
        width = out
    return shapes | {"fc.weight": (classes, 512), "fc.bias": (classes,)}


def torchvision_vit(size: int, patch: int, layers: int, dim: int, mlp: int, classes: int,
                    channels: int) -> dict[str, tuple[int, ...]]:
    """torchvision's VisionTransformer state_dict, name -> shape, in its order."""
    shapes = {"class_token": (1, 1, dim), "conv_proj.weight": (dim, channels, patch, patch),
              "conv_proj.bias": (dim,), "encoder.pos_embedding": (1, 1 + (size // patch) ** 2, dim)}
    for i in range(layers):
        block = f"encoder.layers.encoder_layer_{i}"
        shapes |= {f"{block}.ln_1.weight": (dim,), f"{block}.ln_1.bias": (dim,),
                   f"{block}.self_attention.in_proj_weight": (3 * dim, dim),
                   f"{block}.self_attention.in_proj_bias": (3 * dim,),
                   f"{block}.self_attention.out_proj.weight": (dim, dim),
                   f"{block}.self_attention.out_proj.bias": (dim,),
                   f"{block}.ln_2.weight": (dim,), f"{block}.ln_2.bias": (dim,),
                   f"{block}.mlp.0.weight": (mlp, dim), f"{block}.mlp.0.bias": (mlp,),
                   f"{block}.mlp.3.weight": (dim, mlp), f"{block}.mlp.3.bias": (dim,)}
    return shapes | {"encoder.ln.weight": (dim,), "encoder.ln.bias": (dim,),
                     "heads.head.weight": (classes, dim), "heads.head.bias": (classes,)}


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def test_default_sizes_have_the_published_parameter_counts_and_torchvision_names():
    with torch.device("meta"):  # no memory: the checkpoint loader builds them this way too
        resnet, vit = archs.resnet18(), archs.vit()
    assert sum(p.numel() for p in resnet.parameters()) == 11_689_512  # torchvision's resnet18
    assert list(shapes_of(resnet).items()) == list(torchvision_resnet18(1000).items())
    assert sum(p.numel() for p in vit.parameters()) == 5_717_416  # ViT-Tiny/16 (DeiT-Ti)
    assert list(shapes_of(vit).items()) == list(torchvision_vit(224, 16, 12, 192, 768, 1000, 3).items())
    with torch.device("meta"):
        small = archs.vit(**SMALL_VIT)
        grey = archs.resnet18(num_classes=7, in_channels=1)
    assert shapes_of(small) == torchvision_vit(32, 4, 2, 8, 12, 3, 2)
    assert shapes_of(grey) == torchvision_resnet18(7, channels=1)


def reference_resnet18(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """He et al.'s ResNet-18 from the weights alone, in functional torch (batch norm in eval mode)."""

    def bn(t: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(t, weights[f"{prefix}.running_mean"], weights[f"{prefix}.running_var"],
                            weights[f"{prefix}.weight"], weights[f"{prefix}.bias"], eps=1e-5)

    t = F.max_pool2d(F.relu(bn(F.conv2d(x, weights["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for stage in range(1, 5):
        for block in range(2):
            p, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            inner = F.relu(bn(F.conv2d(t, weights[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            inner = bn(F.conv2d(inner, weights[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in weights:
                t = bn(F.conv2d(t, weights[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            t = F.relu(inner + t)
    return F.linear(t.mean((2, 3)), weights["fc.weight"], weights["fc.bias"])


def reference_vit(weights: dict[str, torch.Tensor], x: torch.Tensor, patch: int, heads: int) -> torch.Tensor:
    """Dosovitskiy et al.'s ViT from the weights alone: attention written out, LayerNorm eps 1e-6."""
    dim = weights["class_token"].shape[-1]

    def ln(t: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(t, (dim,), weights[f"{prefix}.weight"], weights[f"{prefix}.bias"], eps=1e-6)

    patches = F.conv2d(x, weights["conv_proj.weight"], weights["conv_proj.bias"], stride=patch)
    t = torch.cat([weights["class_token"].expand(x.shape[0], 1, dim), patches.flatten(2).transpose(1, 2)], 1)
    t = t + weights["encoder.pos_embedding"]
    layer = 0
    while f"encoder.layers.encoder_layer_{layer}.ln_1.weight" in weights:
        p = f"encoder.layers.encoder_layer_{layer}"
        qkv = F.linear(ln(t, f"{p}.ln_1"), weights[f"{p}.self_attention.in_proj_weight"],
                       weights[f"{p}.self_attention.in_proj_bias"])
        q, k, v = (part.unflatten(-1, (heads, dim // heads)).transpose(1, 2) for part in qkv.chunk(3, -1))
        attended = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), -1) @ v
        t = t + F.linear(attended.transpose(1, 2).flatten(2), weights[f"{p}.self_attention.out_proj.weight"],
                         weights[f"{p}.self_attention.out_proj.bias"])
        hidden = F.gelu(F.linear(ln(t, f"{p}.ln_2"), weights[f"{p}.mlp.0.weight"], weights[f"{p}.mlp.0.bias"]))
        t = t + F.linear(hidden, weights[f"{p}.mlp.3.weight"], weights[f"{p}.mlp.3.bias"])
        layer += 1
    return F.linear(ln(t, "encoder.ln")[:, 0], weights["heads.head.weight"], weights["heads.head.bias"])


def randomised_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics, so that the reference must use them as the model does."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def test_resnet18_computes_the_paper_s_network_at_cifar_and_imagenet_sizes():
    torch.manual_seed(0)
    model = randomised_batch_norms(archs.resnet18(num_classes=4))
    weights, stage = model.state_dict(), []
    handle = model.layer4.register_forward_hook(lambda _m, _a, output: stage.append(tuple(output.shape)))
    for x in (torch.rand(2, 3, 32, 32), torch.rand(1, 3, 224, 224)):
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (x.shape[0], 4)
        torch.testing.assert_close(logits, reference_resnet18(weights, x), rtol=1e-4, atol=1e-4)
    handle.remove()
    assert stage == [(2, 512, 1, 1), (1, 512, 7, 7)]


def test_vit_computes_the_paper_s_network():
    torch.manual_seed(0)
    model = archs.vit(**SMALL_VIT).eval()
    torch.nn.init.normal_(model.class_token)  # zero at initialisation: make the class token count
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        logits = model(x)
        block = model.encoder.layers.encoder_layer_1
        tokens = []
        handle = block.register_forward_hook(lambda _m, _a, output: tokens.append(output))
        model(x)
        handle.remove()
    assert logits.shape == (3, 3) and tokens[0].shape == (3, 1 + 8 * 8, 8)  # a block gives its tokens
    torch.testing.assert_close(logits, reference_vit(model.state_dict(), x, patch=4, heads=2),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="takes 32x32 images, got 64x64"):
        model(torch.rand(1, 2, 64, 64))
    with pytest.raises(ValueError, match="not a multiple"):
        archs.vit(image_size=30, patch_size=4)


@pytest.mark.parametrize("name", ["resnet18", "vit"])
def test_every_activation_is_its_own_non_inplace_module(name):
    with torch.device("meta"):
        model = archs.resnet18() if name == "resnet18" else archs.vit()
    modules = list(model.modules())
    assert len({id(m) for m in modules}) == len(modules)  # no module is used twice
    kind = torch.nn.ReLU if name == "resnet18" else torch.nn.GELU
    activations = [m for m in modules if isinstance(m, kind)]
    assert len(activations) == (1 + 8 * 2 if name == "resnet18" else 12)  # stem + 2 per block; 1 per block
    assert all(not getattr(m, "inplace", False) for m in activations)


@pytest.mark.parametrize(("name", "kwargs", "sample"), [
    ("resnet18", {"num_classes": 3, "in_channels": 1}, (1, 32, 32)),
    ("vit", SMALL_VIT, (2, 32, 32)),
])
def test_checkpoints_and_state_dicts_naming_them_load_without_trust(tmp_path, name, kwargs, sample):
    torch.manual_seed(0)
    model = getattr(archs, name)(**kwargs).eval()
    assert archs.ARCHITECTURES.get(name) is getattr(archs, name)
    meta = ModelMeta(modality="image", input_shape=sample, class_names=("a", "b", "c"))
    save_checkpoint(tmp_path / "m.pt", model, arch=name, arch_kwargs=kwargs, meta=meta)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["arch"] == f"xaibench.models.archs:{name}"
    torch.save(model.state_dict(), tmp_path / "weights.pt")  # e.g. torchvision's own weights
    x = torch.rand(2, *sample)
    with torch.no_grad():
        expected = model(x)
        for loaded in (load_model(tmp_path / "m.pt"),
                       load_model(tmp_path / "weights.pt", arch=archs.reference(name), arch_kwargs=kwargs)):
            torch.testing.assert_close(loaded.module(x), expected, rtol=0, atol=0)

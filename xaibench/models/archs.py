"""The architectures xaibench ships: small classifiers for the bundled datasets, and reference
architectures of real size (ResNet-18, ``xaibench.models.resnet``; ViT, ``xaibench.models.vit``) whose
parameter names are torchvision's, so that a researcher's weights load with ``--arch``; and a small
transformer text classifier over token ids (``xaibench.models.text_transformer``).

Each factory returns an ``nn.Module`` producing logits and is registered in ``ARCHITECTURES``;
checkpoints name them as ``"xaibench.models.archs:<factory>"``. Only these factories may be resolved
from a file without ``--trust-model`` (see ``xaibench.models.checkpoint``).

Every activation is its own ``nn.ReLU`` instance and nothing runs in place: captum's DeepLift and guided
backpropagation hook ``nn.ReLU`` modules, which breaks on functional or shared activations. Layers are
named (``conv1``, ``relu1``, ..., ``fc``) so that a layer method can address them, e.g. ``conv4`` for
Grad-CAM on ``shapes_cnn``. The modules of the reference architectures and of the text transformer are
imported only when one is built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")

ARCHS_MODULE = "xaibench.models.archs"

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


def reference(name: str) -> str:
    """The ``"module:factory"`` string a checkpoint stores for the registered architecture ``name``."""
    return f"{ARCHS_MODULE}:{name}"


def _conv_blocks(
    dims: int, channels: tuple[int, ...], *, pooled: int, batch_norm: bool = False
) -> list[tuple[str, nn.Module]]:
    """Named conv (3, padding 1) [/ batch norm] / ReLU blocks, the first ``pooled`` of them followed
    by a 2x max pool; ``channels`` starts with the input channel count."""
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv1d
    norm = torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm1d
    pool = torch.nn.MaxPool2d if dims == 2 else torch.nn.MaxPool1d
    layers: list[tuple[str, nn.Module]] = []
    for i in range(1, len(channels)):
        layers.append((f"conv{i}", conv(channels[i - 1], channels[i], kernel_size=3, padding=1)))
        if batch_norm:
            layers.append((f"bn{i}", norm(channels[i])))
        layers.append((f"relu{i}", torch.nn.ReLU()))
        if i <= pooled:
            layers.append((f"pool{i}", pool(2)))
    return layers


@ARCHITECTURES.register("digits_cnn", modality="image", input_shape=(1, 32, 32),
                        description="3 conv blocks + linear, input (1, 32, 32)")
def digits_cnn(num_classes: int = 10) -> nn.Module:
    """CNN for the 8x8 scikit-learn digits upsampled to 32x32: three conv/ReLU/max-pool blocks, linear.

    Args:
        num_classes: number of output logits.
    """
    layers = _conv_blocks(2, (1, 8, 16, 32), pooled=3)  # 32 -> 16 -> 8 -> 4
    layers += [("flatten", torch.nn.Flatten()), ("fc", torch.nn.Linear(32 * 4 * 4, num_classes))]
    return torch.nn.Sequential(OrderedDict(layers))


@ARCHITECTURES.register("shapes_cnn", modality="image", input_shape=(3, 64, 64),
                        description="4 conv/batch-norm blocks + global max pool + linear, "
                                    "input (3, 64, 64)")
def shapes_cnn(num_classes: int = 5) -> nn.Module:
    """CNN for the synthetic shapes images: four conv/batch-norm/ReLU blocks, global max pool, linear.

    The last convolution, ``conv4``, sees 38x38 pixels (enough for the largest object) on an 8x8 grid
    and feeds the global pool directly, so Grad-CAM (Selvaraju et al., ICCV 2017) on ``conv4`` weighs
    exactly the features the classifier pools. The
    pool is a max, not an average: an object covers 2-20% of the image, and averaging drowns its
    evidence in background (about 0.5 test accuracy after 5 epochs instead of 0.99). It is an
    ``nn.MaxPool2d`` over the whole grid, a module DeepLift has a rule for.

    Args:
        num_classes: number of output logits.
    """
    layers = _conv_blocks(2, (3, 16, 32, 64, 64), pooled=3, batch_norm=True)  # 64 -> 32 -> 16 -> 8
    layers += [
        ("global_pool", torch.nn.MaxPool2d(8)),
        ("flatten", torch.nn.Flatten()),
        ("fc", torch.nn.Linear(64, num_classes)),
    ]
    return torch.nn.Sequential(OrderedDict(layers))


@ARCHITECTURES.register("mnist1d_cnn", modality="sequence", input_shape=(1, 40),
                        description="3 Conv1d blocks + linear, input (1, 40)")
def mnist1d_cnn(num_classes: int = 10) -> nn.Module:
    """1-D CNN for MNIST-1D (Greydanus, 2020): three Conv1d/ReLU blocks with two poolings, linear.

    Args:
        num_classes: number of output logits.
    """
    layers = _conv_blocks(1, (1, 32, 32, 32), pooled=2)  # 40 -> 20 -> 10
    layers += [("flatten", torch.nn.Flatten()), ("fc", torch.nn.Linear(32 * 10, num_classes))]
    return torch.nn.Sequential(OrderedDict(layers))


@ARCHITECTURES.register("motifs_cnn", modality="sequence", input_shape=(1, 64),
                        description="3 Conv1d blocks + global max pool + linear, input (1, length)")
def motifs_cnn(num_classes: int = 4, length: int = 64) -> nn.Module:
    """1-D CNN for the synthetic motif sequences: three Conv1d/ReLU blocks with two poolings, a global
    max pool, linear. ``conv3`` sees 18 positions (a motif has 8) and the pool makes the logits the
    same wherever the motif lies; the pool is an ``nn.MaxPool1d``, a module DeepLift has a rule for.

    Args:
        num_classes: number of output logits.
        length: sequence length, a multiple of 4.
    """
    layers = _conv_blocks(1, (1, 16, 32, 32), pooled=2)  # length -> length / 4
    layers += [
        ("global_pool", torch.nn.MaxPool1d(length // 4)),
        ("flatten", torch.nn.Flatten()),
        ("fc", torch.nn.Linear(32, num_classes)),
    ]
    return torch.nn.Sequential(OrderedDict(layers))


@ARCHITECTURES.register("mlp", modality="tabular", input_shape=None,
                        description="2 hidden ReLU layers, input (in_features,)")
def mlp(in_features: int, num_classes: int, hidden: int = 32) -> nn.Module:
    """Multi-layer perceptron with two hidden ReLU layers of width ``hidden``.

    Args:
        in_features: number of input features.
        num_classes: number of output logits.
        hidden: width of both hidden layers.
    """
    return torch.nn.Sequential(OrderedDict([
        ("fc1", torch.nn.Linear(in_features, hidden)),
        ("relu1", torch.nn.ReLU()),
        ("fc2", torch.nn.Linear(hidden, hidden)),
        ("relu2", torch.nn.ReLU()),
        ("fc3", torch.nn.Linear(hidden, num_classes)),
    ]))


@ARCHITECTURES.register("logreg", modality="tabular", input_shape=None,
                        description="multinomial logistic regression, input (in_features,)")
def logreg(in_features: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer whose logits feed a softmax.

    Args:
        in_features: number of input features.
        num_classes: number of output logits.
    """
    return torch.nn.Sequential(OrderedDict([("fc", torch.nn.Linear(in_features, num_classes))]))


@ARCHITECTURES.register("resnet18", modality="image", input_shape=(3, 224, 224),
                        description="ResNet-18 with torchvision's parameter names, input (3, 224, 224); "
                                    "also 32x32")
def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-18 (He et al., CVPR 2016) that loads torchvision's ``resnet18`` weights
    (``xaibench.models.resnet``).

    Args:
        num_classes: number of output logits.
        in_channels: channels of the input images.
    """
    from xaibench.models.resnet import resnet18 as build

    return build(num_classes, in_channels)


@ARCHITECTURES.register("vit", modality="image", input_shape=(3, 224, 224),
                        description="Vision Transformer, by default ViT-Tiny/16 with torchvision's parameter "
                                    "names, input (3, image_size, image_size)")
def vit(image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 3,
        hidden_dim: int = 192, mlp_dim: int = 768, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Vision Transformer (Dosovitskiy et al., ICLR 2021) that loads torchvision's ``VisionTransformer``
    weights of the same sizes (``xaibench.models.vit``); the defaults are ViT-Tiny/16.

    Args:
        image_size: side of the square input images, a multiple of ``patch_size``.
        patch_size: side of a patch.
        num_layers: transformer blocks.
        num_heads: attention heads per block (they divide ``hidden_dim``).
        hidden_dim: token width.
        mlp_dim: hidden width of each block's MLP.
        num_classes: number of output logits.
        in_channels: channels of the input images.
    """
    from xaibench.models.vit import vit as build

    return build(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes, in_channels)


@ARCHITECTURES.register("text_transformer", modality="text", input_shape=None,
                        description="transformer encoder over token ids (N, T), T <= max_length, classifying "
                                    "by token 0 ([CLS])")
def text_transformer(vocab_size: int, max_length: int = 64, num_layers: int = 2, num_heads: int = 4,
                     hidden_dim: int = 64, mlp_dim: int = 128, num_classes: int = 3,
                     pad_id: int = 0) -> nn.Module:
    """Transformer text classifier over token ids (``xaibench.models.text_transformer``): token
    embedding ``token_embedding``, ViT blocks ``layers``, LayerNorm ``ln``, linear ``head`` on [CLS].

    Args:
        vocab_size: number of token ids.
        max_length: the most tokens a text may have.
        num_layers: transformer blocks.
        num_heads: attention heads per block (they divide ``hidden_dim``).
        hidden_dim: token width.
        mlp_dim: hidden width of each block's MLP.
        num_classes: number of output logits.
        pad_id: the padding token's id.
    """
    from xaibench.models.text_transformer import TextTransformer

    return TextTransformer(vocab_size, max_length, num_layers, num_heads, hidden_dim, mlp_dim, num_classes,
                           pad_id)

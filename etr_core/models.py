"""Networks of the paper (appendix C, B.1) and small classroom variants.

Paper models (appendix C, B.1; parameter counts include biases, the paper counts weights only
where noted):

* ``mlp_paper`` -- 784-128-10, tanh, cross entropy: 101,770 parameters on (Fashion-)MNIST.
* ``mlp_cifar`` -- 3072-128-128-10, tanh: 411,146 parameters (the paper's 410,880 counts weights only).
* ``autoencoder`` -- Hinton & Salakhutdinov's 784-1000-500-250-30 encoder with a mirrored decoder,
  sigmoid activations except at the linear code layer; the output layer returns logits and is
  trained with pixelwise binary cross entropy (``BCEWithLogitsLoss``), which is the paper's
  "pixelwise BCE" computed stably. 2,837,314 parameters (2,833,000 weights).
* ``autoencoder_conv`` -- the CIFAR-10 autoencoder the paper took from the PyTorch-CIFAR-10-autoencoder
  repository (appendix C, B.1): three 4x4 stride-2 convolutions 3-12-24-48 with ReLU, mirrored
  transposed convolutions, sigmoid output trained with pixelwise BCE (logits here, as above);
  47,355 parameters. Needs image sides divisible by 8 (32x32 CIFAR-10, 8x8 digits).
* ``resnet18`` -- the torchvision ResNet18 layout (BasicBlock, [2, 2, 2, 2]), with the first
  convolution adapted to the number of input channels (one for Fashion-MNIST, three for CIFAR-10).
  The paper trains it at TR batch 128 on CIFAR-10 (:func:`paper_tr_batch_size`).

Combinations the paper does not have and that would silently stand in for one it has are errors:
the fully connected ``autoencoder`` on colour images (the paper's CIFAR-10 autoencoder is
``autoencoder_conv``).

Classroom variants: ``mlp_small`` (hidden 32, i.e. 64-32-10 on digits), ``mlp_tiny`` (hidden 16, for
2-D toy data), ``cnn_small`` and ``autoencoder_small``. Input and output sizes always come from the
dataset, so every model runs on every dataset whose shape fits.

Initialisation is deterministic given ``seed``: it runs inside ``torch.random.fork_rng`` so the
caller's global random state is left exactly as it was.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from etr_core._validation import check_choice, check_int

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}

AUTOENCODER_MODELS = ("autoencoder", "autoencoder_conv", "autoencoder_small")
CLASSIFIER_MODELS = ("mlp_tiny", "mlp_small", "mlp_paper", "mlp_cifar", "cnn_small", "resnet18")
MODEL_NAMES: tuple[str, ...] = CLASSIFIER_MODELS + AUTOENCODER_MODELS

MODEL_DESCRIPTIONS: dict[str, str] = {
    "mlp_tiny": "MLP in-16-out, tanh (2-D toy data)",
    "mlp_small": "MLP in-32-out, tanh (64-32-10 on digits)",
    "mlp_paper": "MLP in-128-out, tanh (the paper's 784-128-10, 101,770 parameters)",
    "mlp_cifar": "MLP in-128-128-out, tanh (the paper's CIFAR-10 MLP)",
    "cnn_small": "conv3x3(16)-pool-conv3x3(32)-pool-fc64-out, ReLU",
    "resnet18": "ResNet18 (torchvision layout, first conv adapted to the input channels)",
    "autoencoder": "Hinton autoencoder in-1000-500-250-30 + mirrored decoder, sigmoid, BCE (grey images)",
    "autoencoder_conv": "convolutional CIFAR-10 autoencoder: conv 3-12-24-48 (4x4, stride 2) + mirrored, BCE",
    "autoencoder_small": "autoencoder in-32-16-8 + mirrored decoder, sigmoid, BCE (digits)",
}


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
    return [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]


class MLP(nn.Module):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between layers.

    The input is flattened, so image batches of shape ``(N, C, H, W)`` work directly. The last
    layer is linear (logits for the cross entropy of appendix C, B.1).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh") -> None:
        super().__init__()
        sizes = _check_sizes(sizes)
        check_choice("activation", activation, ACTIVATIONS)
        self.sizes = tuple(sizes)
        self.activation = activation
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Autoencoder(nn.Module):
    """Deep autoencoder of Hinton & Salakhutdinov (2006) as in appendix C, B.1.

    ``sizes`` is the encoder ``(in, h1, ..., code)``; the decoder mirrors it. Every layer is followed
    by ``activation`` except the code layer (linear) and the output layer, which returns logits:
    ``sigmoid(logits)`` is the reconstruction and the loss is pixelwise BCE with logits.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "sigmoid") -> None:
        super().__init__()
        sizes = _check_sizes(sizes)
        check_choice("activation", activation, ACTIVATIONS)
        self.sizes = tuple(sizes)
        act = ACTIVATIONS[activation]
        enc: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            enc.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                enc.append(act())
        rev = sizes[::-1]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(rev)):
            dec.append(nn.Linear(a, b))
            if i < len(rev) - 2:
                dec.append(act())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return reconstruction logits of shape ``(N, in)``."""
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in ``[0, 1]`` with the shape of ``x``."""
        return torch.sigmoid(self.forward(x)).reshape(x.shape)


class ConvAutoencoder(nn.Module):
    """The paper's CIFAR-10 autoencoder (appendix C, B.1: the PyTorch-CIFAR-10-autoencoder repository).

    Encoder: ``Conv2d(C, 12, 4, stride 2, pad 1)-ReLU-Conv2d(12, 24, ...)-ReLU-Conv2d(24, 48, ...)-ReLU``
    halves the image side three times; the decoder mirrors it with transposed convolutions. The last
    layer returns logits, flattened to ``(N, C*H*W)`` like :class:`Autoencoder`, so the loss is the
    same pixelwise BCE with logits (the repository's sigmoid + ``BCELoss``, computed stably).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (12, 24, 48)) -> None:
        super().__init__()
        sizes = [check_int("in_channels", in_channels, minimum=1), *_check_sizes(channels)]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        dec: list[nn.Module] = []
        rev = sizes[::-1]
        for i, (a, b) in enumerate(itertools.pairwise(rev)):
            dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < len(rev) - 2:
                dec.append(nn.ReLU())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits of shape ``(N, C*H*W)`` for images ``x`` of shape ``(N, C, H, W)``."""
        return self.decoder(self.encoder(x)).flatten(1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in ``[0, 1]`` with the shape of ``x``."""
        return torch.sigmoid(self.forward(x)).reshape(x.shape)


class SmallCNN(nn.Module):
    """conv3x3(16)-ReLU-maxpool-conv3x3(32)-ReLU-maxpool-fc64-ReLU-fc(classes); any image size >= 4."""

    def __init__(self, in_channels: int, image_hw: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        h, w = image_hw
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * (h // 4) * (w // 4), 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18 with torchvision's layer layout and initialisation (He et al., 2016).

    The paper used torchvision's model for CIFAR-10 and a variant whose first convolution takes one
    channel for Fashion-MNIST (appendix C, B.1); ``in_channels`` selects between them. With three
    channels and 1000 classes the parameter count equals torchvision's 11,689,512.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(nn.Sequential(_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters ``d`` (the dimension of the TR problem, Eq. 8)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def is_autoencoder(name: str) -> bool:
    """True for models trained to reconstruct their input with pixelwise BCE."""
    return name in AUTOENCODER_MODELS


def paper_tr_batch_size(model: str, dataset: str) -> int | None:
    """TR batch size the paper used for ``model`` on ``dataset`` where it departs from Table 1's 512.

    Appendix C, B.1: "Only for the larger ResNet18 on CIFAR-10, we adapted the batch size to 128".
    Returns ``None`` (Table 1's 512 applies) for every other pair.
    """
    check_choice("model", model, MODEL_NAMES)
    return 128 if (model == "resnet18" and dataset == "cifar10") else None


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_shape, int) or not isinstance(input_shape, Sequence) or len(input_shape) == 0:
        raise ValueError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r}")
    return tuple(check_int(f"input_shape[{i}]", s, minimum=1) for i, s in enumerate(input_shape))


def check_model_shape(name: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Check that model ``name`` exists for inputs of ``input_shape`` (without the batch axis).

    Raises ``ValueError`` naming the model, the shape and the model to use instead: convolutional
    models need ``(C, H, W)`` images; the fully connected ``autoencoder`` refuses colour images (the
    paper's CIFAR-10 autoencoder is ``autoencoder_conv``, appendix C, B.1). Returns the shape.
    """
    check_choice("model", name, MODEL_NAMES)
    shape = _check_input_shape(input_shape)
    if name == "autoencoder" and len(shape) == 3 and shape[0] == 3:
        raise ValueError(
            f"model 'autoencoder' is the paper's fully connected autoencoder for grey images; the paper's "
            f"CIFAR-10 autoencoder is convolutional: use model 'autoencoder_conv' (input_shape={shape!r})"
        )
    if name == "autoencoder_conv" and (len(shape) != 3 or shape[1] % 8 or shape[2] % 8):
        raise ValueError(
            f"model 'autoencoder_conv' halves the image side three times and needs input_shape=(channels, "
            f"height, width) with height and width divisible by 8 (CIFAR-10 32x32, digits 8x8); got "
            f"input_shape={shape!r}. Use model 'autoencoder' for 28x28 images."
        )
    if name in ("cnn_small", "resnet18") and (len(shape) != 3 or min(shape[1:]) < 4):
        raise ValueError(
            f"model {name!r} needs image inputs with input_shape=(channels, height, width), height and "
            f"width >= 4; got input_shape={shape!r}. Use an MLP for this dataset."
        )
    return shape


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, *, seed: int | None = 0
) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (without the batch axis) and ``num_classes``.

    ``num_classes`` is ignored by autoencoders, whose output size is the input size. Convolutional
    models need ``input_shape = (C, H, W)`` with ``H, W >= 4``. Weights are initialised from ``seed``
    without touching the global random state (``seed=None`` uses and advances the global state).
    """
    shape = check_model_shape(name, input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    if seed is not None:
        check_int("seed", seed, minimum=0)
    in_features = math.prod(shape)

    def make() -> nn.Module:
        if name == "mlp_tiny":
            return MLP([in_features, 16, num_classes])
        if name == "mlp_small":
            return MLP([in_features, 32, num_classes])
        if name == "mlp_paper":
            return MLP([in_features, 128, num_classes])
        if name == "mlp_cifar":
            return MLP([in_features, 128, 128, num_classes])
        if name == "cnn_small":
            return SmallCNN(shape[0], (shape[1], shape[2]), num_classes)
        if name == "resnet18":
            return ResNet18(shape[0], num_classes)
        if name == "autoencoder":
            return Autoencoder([in_features, 1000, 500, 250, 30])
        if name == "autoencoder_conv":
            return ConvAutoencoder(shape[0])
        return Autoencoder([in_features, 32, 16, 8])

    if seed is None:
        return make()
    # Only the CPU generator initialises weights; seeding it alone keeps CUDA state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return make()

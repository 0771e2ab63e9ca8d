"""Networks of appendix C, B.1: parameter counts from the paper's arithmetic, shapes, determinism."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from etr_core.models import (
    MLP,
    MODEL_NAMES,
    Autoencoder,
    ConvAutoencoder,
    ResNet18,
    build_model,
    count_parameters,
    paper_tr_batch_size,
)
from etr_core.training import TrainConfig, resolve_tr_config


def dense_count(sizes: list[int]) -> int:
    """Weights plus biases of a chain of dense layers, computed by hand (the oracle)."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def test_paper_mlp_has_101770_parameters():
    # Appendix C, B.1 states 101'770 parameters for the 784-128-10 network.
    model = build_model("mlp_paper", (1, 28, 28), 10)
    assert count_parameters(model) == 101_770 == 784 * 128 + 128 + 128 * 10 + 10


def test_cifar_mlp_weights_match_the_paper_and_biases_are_added():
    model = build_model("mlp_cifar", (3, 32, 32), 10)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 410_880  # the paper's figure counts weights only
    assert count_parameters(model) == dense_count([3072, 128, 128, 10]) == 411_146


def test_hinton_autoencoder_matches_the_paper_weight_count():
    model = build_model("autoencoder", (1, 28, 28), 10)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 2_833_000  # paper: 2'833'000
    enc = [784, 1000, 500, 250, 30]
    assert count_parameters(model) == dense_count(enc) + dense_count(enc[::-1]) == 2_837_314


def test_autoencoder_layers_sigmoid_except_code_and_output():
    model = Autoencoder([784, 1000, 500, 250, 30])
    enc = [type(m) for m in model.encoder]
    dec = [type(m) for m in model.decoder]
    assert enc == [nn.Flatten, nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    assert dec == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    x = torch.rand(3, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (3, 784)
    # the code layer is linear: its output equals the affine map of the previous activation
    h = model.encoder[:-1](x)
    code = model.encoder(x)
    torch.testing.assert_close(code, h @ model.encoder[-1].weight.T + model.encoder[-1].bias)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0


def test_resnet18_matches_torchvision_parameter_count():
    # torchvision documents 11,689,512 parameters for resnet18 (1000 classes, 3 channels).
    assert count_parameters(ResNet18(3, 1000)) == 11_689_512
    one_channel = count_parameters(ResNet18(1, 10))
    three_channel = count_parameters(ResNet18(3, 10))
    assert three_channel - one_channel == 2 * 64 * 7 * 7  # only the first convolution differs


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_forward_shapes(name, shape):
    if name == "autoencoder_conv" and shape[1] % 8:
        pytest.skip("the convolutional autoencoder needs sides divisible by 8 (tested below)")
    model = build_model(name, shape, 10)
    out = model(torch.rand(2, *shape))
    expected = (2, int(torch.tensor(shape).prod())) if name.startswith("autoencoder") else (2, 10)
    assert out.shape == expected


def test_mlp_small_on_digits_is_64_32_10():
    model = build_model("mlp_small", (1, 8, 8), 10)
    assert isinstance(model, MLP) and model.sizes == (64, 32, 10)
    assert count_parameters(model) == dense_count([64, 32, 10]) == 2410


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("mlp_small", (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model("mlp_small", (1, 8, 8), 10, seed=7)
    c = build_model("mlp_small", (1, 8, 8), 10, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mlp_huge", "input_shape": (64,), "num_classes": 10}, "model"),
        ({"name": "cnn_small", "input_shape": (2,), "num_classes": 3}, "input_shape"),
        ({"name": "mlp_small", "input_shape": (0,), "num_classes": 3}, "input_shape"),
        ({"name": "mlp_small", "input_shape": (2,), "num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_mlp_rejects_bad_sizes_and_activation():
    with pytest.raises(ValueError, match="sizes"):
        MLP([10])
    with pytest.raises(ValueError, match="activation"):
        MLP([4, 2], activation="swishy")


def conv_count(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def test_cifar_conv_autoencoder_layout_and_parameter_count():
    # appendix C, B.1 (the PyTorch-CIFAR-10-autoencoder layout): 3-12-24-48 with 4x4 stride-2 layers, mirrored
    model = build_model("autoencoder_conv", (3, 32, 32), 10)
    assert isinstance(model, ConvAutoencoder)
    expected = sum(conv_count(a, b, 4) for a, b in [(3, 12), (12, 24), (24, 48), (48, 24), (24, 12), (12, 3)])
    assert count_parameters(model) == expected == 47_355
    codes = model.encoder(torch.rand(2, 3, 32, 32))
    assert codes.shape == (2, 48, 4, 4)  # each layer halves the side: 32 -> 16 -> 8 -> 4
    assert [type(m) for m in model.decoder][-1] is nn.ConvTranspose2d  # logits out; BCE with logits
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 3 * 32 * 32)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and 0.0 <= float(rec.min()) and float(rec.max()) <= 1.0
    torch.testing.assert_close(rec.flatten(1), torch.sigmoid(model(x)))


@pytest.mark.parametrize(
    ("model", "dataset", "match"),
    [
        ("autoencoder", "cifar10", "autoencoder_conv"),  # never a silent MLP stand-in
        ("autoencoder_conv", "mnist", "divisible by 8"),
        ("autoencoder_conv", "fashion_mnist", "divisible by 8"),
        ("autoencoder_conv", "moons", "reconstructs images"),
        ("resnet18", "blobs", "image dataset"),
    ],
)
def test_combinations_the_paper_does_not_have_are_clear_errors(model, dataset, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(dataset=dataset, model=model, method="Adam")


def test_resnet18_trains_at_the_papers_batch_128_on_cifar10_only():
    # appendix C, B.1: "Only for the larger ResNet18 on CIFAR-10, we adapted the batch size to 128"
    assert paper_tr_batch_size("resnet18", "cifar10") == 128
    assert paper_tr_batch_size("resnet18", "fashion_mnist") is None
    cifar = TrainConfig(dataset="cifar10", model="resnet18", method="TR_rms")
    assert resolve_tr_config(cifar).batch_size == 128
    fmnist = TrainConfig(dataset="fashion_mnist", model="resnet18", method="TR_rms")
    assert resolve_tr_config(fmnist).batch_size == 512
    explicit = TrainConfig(dataset="cifar10", model="resnet18", method="TR_rms", batch_size=64)
    assert resolve_tr_config(explicit).batch_size == 64

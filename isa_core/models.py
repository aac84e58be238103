"""Encoders, decoders and the VAE that ties them to a prior (paper appendix A.4).

* ``mlp``: the paper's MLP (A.4, identical to Chen et al. 2018): encoder D-1200-1200-2K with
  ReLU, decoder K-1200-1200-1200-D with Tanh, D = C*H*W;
* ``conv``: the convolutional encoder/decoder of Chen et al. 2018 for 64x64 images
  (4x4 stride-2 convolutions 32-32-64-64, then 512 at 1x1; mirrored transposed convolutions),
  with batch normalisation and ReLU.

The encoder returns the diagonal-Gaussian posterior q(z|x) as (mean, log-variance); the decoder
returns Bernoulli logits of the image. Both may run under bf16 autocast (``isa_core.precision``);
their outputs are float32 either way, and their parameters always are.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from isa_core.choices import Arch, parse_choice
from isa_core.errors import field_error
from isa_core.priors import LpNestedPrior

if TYPE_CHECKING:
    from isa_core.config import TrainConfig

__all__ = [
    "VAE",
    "build_decoder",
    "build_encoder",
    "build_model",
    "gaussian_log_density",
    "reparameterize",
]


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        pixels = math.prod(image_shape)
        self.net = nn.Sequential(
            nn.Linear(pixels, 1200),
            nn.ReLU(inplace=True),
            nn.Linear(1200, 1200),
            nn.ReLU(inplace=True),
            nn.Linear(1200, 2 * latent_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 1200),
            nn.Tanh(),
            nn.Linear(1200, 1200),
            nn.Tanh(),
            nn.Linear(1200, 1200),
            nn.Tanh(),
            nn.Linear(1200, math.prod(image_shape)),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.image_shape)


def _conv_block(cin: int, cout: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _deconv_block(cin: int, cout: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(cin, cout, kernel, stride, padding),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
    ]


class ConvEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        channels = image_shape[0]
        self.net = nn.Sequential(
            *_conv_block(channels, 32, 4, 2, 1),  # 32x32
            *_conv_block(32, 32, 4, 2, 1),  # 16x16
            *_conv_block(32, 64, 4, 2, 1),  # 8x8
            *_conv_block(64, 64, 4, 2, 1),  # 4x4
            *_conv_block(64, 512, 4, 1, 0),  # 1x1
            nn.Conv2d(512, 2 * latent_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        channels = image_shape[0]
        self.net = nn.Sequential(
            *_deconv_block(latent_dim, 512, 1, 1, 0),  # 1x1
            *_deconv_block(512, 64, 4, 1, 0),  # 4x4
            *_deconv_block(64, 64, 4, 2, 1),  # 8x8
            *_deconv_block(64, 32, 4, 2, 1),  # 16x16
            *_deconv_block(32, 32, 4, 2, 1),  # 32x32
            nn.ConvTranspose2d(32, channels, 4, 2, 1),  # 64x64
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


def build_encoder(arch: Arch, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
    """q(z|x)'s network for ``arch``: (B, C, H, W) images to (B, 2K) means and log-variances."""
    if _architecture(arch, image_shape) == Arch.conv:
        return ConvEncoder(image_shape, latent_dim)
    return MLPEncoder(image_shape, latent_dim)


def build_decoder(arch: Arch, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
    """p(x|z)'s network for ``arch``: (B, K) latents to (B, C, H, W) Bernoulli logits."""
    if _architecture(arch, image_shape) == Arch.conv:
        return ConvDecoder(image_shape, latent_dim)
    return MLPDecoder(image_shape, latent_dim)


def _architecture(arch: Arch | str, image_shape: tuple[int, int, int]) -> Arch:
    """``arch`` as an Arch, refused where it cannot take the images (conv needs 64x64)."""
    arch = parse_choice(Arch, "arch", arch)
    if arch == Arch.conv and tuple(image_shape[1:]) != (64, 64):
        raise field_error(
            "arch",
            f"conv needs 64x64 images, the data has {image_shape[1]}x{image_shape[2]}; use mlp",
        )
    return arch


def reparameterize(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I) drawn from ``generator`` (reparameterization)."""
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return torch.addcmul(mean, eps, torch.exp(0.5 * logvar))


def gaussian_log_density(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mean, exp(logvar))."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 * torch.exp(-logvar))


class VAE(nn.Module):
    """Encoder, decoder and a (possibly learnable) L^p-nested prior over K latents."""

    def __init__(self, arch: Arch, image_shape: tuple[int, int, int], prior: LpNestedPrior) -> None:
        super().__init__()
        self.latent_dim = prior.tree.n
        self.image_shape = tuple(image_shape)  # (C, H, W) of the images it encodes and decodes
        self.encoder = build_encoder(arch, image_shape, self.latent_dim)
        self.decoder = build_decoder(arch, image_shape, self.latent_dim)
        self.prior = prior

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) as (mean, log-variance), each (B, K) float32, even under bf16 autocast."""
        # float32 out: the posterior feeds the prior, the TC estimator and the losses (fp32).
        mean, logvar = self.encoder(x).float().chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of the image, (B, C, H, W) float32, even under bf16 autocast."""
        # float32 out: the log-likelihood sums 4096 pixels, too many for bf16's 8-bit mantissa.
        return self.decoder(z).float()


def build_model(config: TrainConfig, image_shape: tuple[int, int, int]) -> VAE:
    """The VAE a config describes, for images of ``image_shape``, with fresh weights."""
    prior = LpNestedPrior(config.tree, scale=config.scale, learn_exponents=config.learn_exponents)
    return VAE(config.arch, image_shape, prior)

"""Network building blocks and factories for both stages.

Helpers first (norm layers, weight init, factories), classes after, as in pix2pix's
``models/networks.py``. Weight init draws from an explicit ``torch.Generator`` so that a
pipeline's initial weights depend only on its seed, not on the global RNG or the device.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import Norm, Upsample
from models.transforms import to_device

NormLayer = Callable[[int], nn.Module]
GeneratorName = Literal["dcgan", "unet"]
DiscriminatorName = Literal["dcgan", "patch"]

GENERATOR_NAMES: tuple[str, ...] = ("dcgan", "unet")
DISCRIMINATOR_NAMES: tuple[str, ...] = ("dcgan", "patch")


def norm_layer(name: Norm) -> NormLayer:
    """A constructor ``f(channels) -> nn.Module`` for the named normalisation."""
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True)
    if name == "instance":
        # No running stats: a sample's output must not depend on what it was batched with.
        return functools.partial(nn.InstanceNorm2d, affine=True, track_running_stats=False)
    if name == "none":
        return lambda _channels: nn.Identity()
    raise ValueError(f"unknown norm {name!r}; expected one of ['batch', 'instance', 'none']")


def init_weights(
    net: nn.Module, *, std: float = 0.02, generator: torch.Generator | None = None
) -> nn.Module:
    """DCGAN/pix2pix init: conv and linear weights N(0, std), norm scales N(1, std), biases 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.InstanceNorm2d):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def spectral_normalised(net: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    """``net`` with spectral normalisation on every conv and linear layer (Miyato et al.).

    Each layer's weight is divided by its largest singular value, estimated by one power
    iteration per training forward, so the network is 1-Lipschitz layer by layer. The power
    iteration's start vectors are drawn from ``generator`` (through the global RNG, which
    ``spectral_norm`` uses, forked so that nothing else sees the draw).
    """
    seed = int(torch.randint(2**62, (1,), generator=generator)) if generator else None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for module in list(net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                    setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
    return net


def build_generator(
    name: str,
    *,
    in_ch: int,
    out_ch: int,
    resolution: int,
    width: int = 64,
    max_width: int = 512,
    norm: Norm = "batch",
    depth: int | None = None,
    kernel: int = 4,
    upsample: Upsample = "resize_conv",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """``dcgan``: noise (N, in_ch) -> (N, out_ch, R, R); ``unet``: (N, in_ch, R, R) -> same size.

    For ``dcgan`` ``in_ch`` is the noise dimension. ``depth`` (``unet`` only) defaults to the
    number of halvings that leave a 2x2 bottleneck.
    """
    if name == "dcgan":
        net: nn.Module = DCGANGenerator(
            in_ch,
            out_ch,
            resolution=resolution,
            width=width,
            max_width=max_width,
            kernel=kernel,
            norm=norm_layer(norm),
            upsample=upsample,
        )
    elif name == "unet":
        net = UNetGenerator(
            in_ch,
            out_ch,
            depth=depth if depth is not None else resolution.bit_length() - 2,
            width=width,
            max_width=max_width,
            norm=norm,
            upsample=upsample,
        )
    else:
        raise ValueError(f"unknown generator {name!r}; expected one of {list(GENERATOR_NAMES)}")
    return init_weights(net, generator=generator)


def build_discriminator(
    name: str,
    *,
    in_ch: int,
    resolution: int,
    width: int = 64,
    max_width: int = 512,
    norm: Norm = "batch",
    n_layers: int = 3,
    kernel: int = 4,
    spectral_norm: bool = False,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """``dcgan``: one logit per image; ``patch``: a map of logits, one per receptive field.

    ``spectral_norm`` normalises every layer's weight (see :func:`spectral_normalised`).
    """
    if name == "dcgan":
        net: nn.Module = DCGANDiscriminator(
            in_ch,
            resolution=resolution,
            width=width,
            max_width=max_width,
            kernel=kernel,
            norm=norm_layer(norm),
        )
    elif name == "patch":
        net = PatchDiscriminator(
            in_ch,
            width=width,
            max_width=max_width,
            n_layers=n_layers,
            norm=norm_layer(norm),
            use_bias=norm != "batch",
        )
    else:
        raise ValueError(
            f"unknown discriminator {name!r}; expected one of {list(DISCRIMINATOR_NAMES)}"
        )
    net = init_weights(net, generator=generator)
    return spectral_normalised(net, generator=generator) if spectral_norm else net


def _pad(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) so a stride-2 conv halves and its transpose doubles."""
    return (kernel - 1) // 2, kernel % 2


def _widths(width: int, max_width: int, n: int) -> list[int]:
    return [min(width * 2**i, max_width) for i in range(n)]


class DCGANGenerator(nn.Module):
    """z -> linear 4x4 feature map -> (stride-2 transposed conv | nearest x2 + conv) + BN +
    ReLU, repeated -> tanh."""

    def __init__(
        self,
        z_dim: int,
        out_ch: int,
        *,
        resolution: int,
        width: int,
        max_width: int,
        kernel: int,
        norm: NormLayer,
        upsample: Upsample = "transposed",
    ) -> None:
        super().__init__()
        n_up = resolution.bit_length() - 3  # 4 -> resolution
        if n_up < 1:
            raise ValueError(f"DCGAN generator needs resolution >= 8, got {resolution}")
        chans = _widths(width, max_width, n_up)[::-1]  # widest at 4x4
        self.z_dim = z_dim
        self.base = chans[0]
        self.project = nn.Linear(z_dim, chans[0] * 16, bias=False)
        layers: list[nn.Module] = [norm(chans[0]), nn.ReLU(True)]
        outs = chans[1:] + [out_ch]
        for i, (c_in, c_out) in enumerate(zip(chans, outs, strict=True)):
            last = i == n_up - 1
            layers += upsampling(c_in, c_out, mode=upsample, kernel=kernel, bias=last)
            layers += [nn.Tanh()] if last else [norm(c_out), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z.flatten(1)).view(z.shape[0], self.base, 4, 4)
        return self.body(x)


class DCGANDiscriminator(nn.Module):
    """Stride-2 convs + BN + LeakyReLU(0.2) down to 4x4, then one linear logit."""

    def __init__(
        self,
        in_ch: int,
        *,
        resolution: int,
        width: int,
        max_width: int,
        kernel: int,
        norm: NormLayer,
    ) -> None:
        super().__init__()
        n_down = resolution.bit_length() - 3
        if n_down < 1:
            raise ValueError(f"DCGAN discriminator needs resolution >= 8, got {resolution}")
        chans = _widths(width, max_width, n_down)
        pad, _ = _pad(kernel)
        layers: list[nn.Module] = []
        c_in = in_ch
        for i, c_out in enumerate(chans):
            # No norm on the first layer (DCGAN): it would normalise away the input's statistics.
            layers.append(nn.Conv2d(c_in, c_out, kernel, 2, pad, bias=i == 0))
            if i > 0:
                layers.append(norm(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).flatten(1))


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per scale, the s-th seeing the input average-pooled s times; their
    logits side by side, (N, scales).

    At full resolution a discriminator trained on ~20 masks learns mostly what a vessel
    looks like up close; at half size the same convolutions span twice as much of the
    vessels' layout. pix2pixHD splits its image discriminator the same way.
    """

    def __init__(self, nets: Iterable[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        logits = []
        for i, net in enumerate(self.nets):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            logits.append(net(x).flatten(1))
        return torch.cat(logits, dim=1)


class EMAGenerator(nn.Module):
    """A generator plus an exponential moving average of its weights (a standard GAN
    stabiliser). Training mode runs the live network ``net``; eval mode runs ``ema``, so
    generation and sample grids use the averaged weights. Both are in the state dict."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False)

    @property
    def z_dim(self) -> int:
        return int(self.net.z_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z) if self.training else self.ema(z)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the live weights; buffers (BN statistics) are copied."""
        for e, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            e.lerp_(p, 1.0 - self.decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            e.copy_(b)

    @torch.no_grad()
    def settle_statistics(self, noise: Iterable[Tensor]) -> None:
        """Give the average batch-norm statistics of its own, pooled over the ``noise``
        batches (BigGAN's standing statistics), in place of the live network's that
        ``update`` copies: the live statistics follow weights the average has not caught up
        with. The next ``update`` copies the live ones back."""
        norms = [m for m in self.ema.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over all the batches
        was_training = self.ema.training
        self.ema.train()
        for z in noise:
            self.ema(z)
        self.ema.train(was_training)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def upsampling(
    c_in: int, c_out: int, *, mode: Upsample, kernel: int, bias: bool
) -> list[nn.Module]:
    """Layers that double the spatial size: a stride-2 transposed conv, or (resize_conv)
    nearest x2 then a "same" conv of the largest odd size <= ``kernel``, which avoids the
    checkerboard artefacts transposed convolutions leave (Odena et al., 2016)."""
    if mode == "transposed":
        pad, out_pad = _pad(kernel)
        return [nn.ConvTranspose2d(c_in, c_out, kernel, 2, pad, out_pad, bias=bias)]
    if mode == "resize_conv":
        odd = kernel if kernel % 2 else kernel - 1
        return [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_out, odd, 1, odd // 2, bias=bias),
        ]
    raise ValueError(f"unknown upsample {mode!r}; expected resize_conv or transposed")


class _Up(nn.Module):
    """Double the spatial size with a 4x4 transposed conv or nearest + 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, *, mode: Upsample, bias: bool) -> None:
        super().__init__()
        layers = upsampling(c_in, c_out, mode=mode, kernel=4, bias=bias)
        # One layer is kept bare so the state dict keeps its "op.weight" names.
        self.op: nn.Module = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class UNetGenerator(nn.Module):
    """pix2pix U-Net: ``depth`` stride-2 4x4 convs down, as many upsamplings back, skips
    concatenated. Built as flat lists rather than pix2pix's recursive blocks so the forward
    is easy to read and to compile."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        depth: int,
        width: int = 64,
        max_width: int = 512,
        norm: Norm = "batch",
        upsample: Upsample = "resize_conv",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth must be >= 1, got {depth}")
        make_norm = norm_layer(norm)
        # A bias before BatchNorm is cancelled by its mean subtraction.
        bias = norm != "batch"
        chans = _widths(width, max_width, depth)
        self.depth = depth
        self.downs = nn.ModuleList()
        c_in = in_ch
        for i, c_out in enumerate(chans):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.LeakyReLU(0.2, True))
            # Outermost: raw input; innermost: 2x2 or smaller, where a norm would zero it.
            plain = i == 0 or i == depth - 1
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias or plain))
            if not plain:
                layers.append(make_norm(c_out))
            self.downs.append(nn.Sequential(*layers))
            c_in = c_out
        self.ups = nn.ModuleList()
        for i in reversed(range(depth)):
            inner = chans[i] if i == depth - 1 else chans[i] * 2  # skip concatenated
            outer = out_ch if i == 0 else chans[i - 1]
            layers = [nn.ReLU(True), _Up(inner, outer, mode=upsample, bias=bias or i == 0)]
            layers.append(nn.Tanh() if i == 0 else make_norm(outer))
            self.ups.append(nn.Sequential(*layers))

    def forward(self, x: Tensor) -> Tensor:
        skips: list[Tensor] = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the innermost output goes straight up
        for up in self.ups:
            x = up(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        return x


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN (NLayerDiscriminator): a grid of real/fake logits, each seeing a patch
    (70x70 for n_layers=3, 34x34 for 2)."""

    def __init__(
        self,
        in_ch: int,
        *,
        width: int = 64,
        max_width: int = 512,
        n_layers: int = 3,
        norm: NormLayer,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c_in = width
        for i in range(1, n_layers + 1):
            c_out = min(width * 2**i, max_width)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride, 1, bias=use_bias),
                norm(c_out),
                nn.LeakyReLU(0.2, True),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's activations (after its LeakyReLU), for feature matching."""
        out = []
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class Runtime:
    """How networks run on a device: the fast path's switches in one place.

    CUDA fast: bf16 autocast, channels_last, fused Adam, cuDNN autotuning and, optionally,
    torch.compile. CPU fast: every core, fused Adam and fp32 (bf16 and, for these small
    convolutions, channels_last measured no faster on our 2-core machines), and optionally
    torch.compile.
    ``fast=False`` is plain fp32 eager on any device: the reference for tests and benchmarks.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    fused_adam: bool = False
    compile: bool = False

    @classmethod
    def create(cls, device: torch.device, *, fast: bool, compile: bool = False) -> Runtime:
        # These switches are process-wide, so each Runtime sets them both ways: a plain run
        # after a fast one in the same process must not inherit them. (The thread count it
        # does inherit; on CPU a run repeats exactly only with the same number of threads.)
        if device.type == "cuda":
            # Autotuning picks the fastest kernels for these fixed shapes; deterministic cuDNN
            # kernels (no atomic adds in weight gradients) make a plain run repeat exactly.
            torch.backends.cudnn.benchmark = fast
            torch.backends.cudnn.deterministic = not fast
        else:
            # A saturating discriminator drives activations and gradients into denormals,
            # which x86 CPUs handle in microcode: training slowed 5-10x mid-run until this.
            torch.set_flush_denormal(fast)
        if not fast:
            return cls(device=device)
        if device.type == "cuda":
            return cls(
                device=device,
                amp_dtype=torch.bfloat16,
                channels_last=True,
                fused_adam=True,
                compile=compile,
            )
        use_all_cores()
        # Fused Adam on CPU: one kernel instead of a loop over ~50 small tensors; measured
        # 5x (64 px) to 18x (256 px) faster optimiser steps on a 2-core machine.
        return cls(device=device, channels_last=CPU_CHANNELS_LAST, fused_adam=True, compile=compile)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def module(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def tensor(self, x: Tensor) -> Tensor:
        x = to_device(x, self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def compiled(self, net: nn.Module) -> Callable[..., Tensor]:
        """The callable to run ``net`` with; state dicts stay on the uncompiled module."""
        if self.compile:
            return torch.compile(net)  # type: ignore[return-value]
        return net

    def adam(
        self, params: Iterable[nn.Parameter], *, lr: float, betas: tuple[float, float]
    ) -> torch.optim.Adam:
        if self.fused_adam:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        return torch.optim.Adam(params, lr=lr, betas=betas)


# Measured with bench/pipeline.py on a 2-core CPU: channels_last helped the U-Net at some
# sizes and hurt at others (BatchNorm and the DCGAN generator slow down), so CPU stays NCHW.
CPU_CHANNELS_LAST = False


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_all_cores() -> None:
    """Let intra-op parallelism use every core this process may run on, unless the operator
    chose a number with ``OMP_NUM_THREADS`` (several jobs sharing a few cores each run far
    faster on one thread than all on every core: 22 against 8 steps/s here)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    cores = usable_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc


class AdversarialPair:
    """A generator and its discriminator placed on a runtime, each with its own Adam.

    The stages differ only in their networks and their training step (subclasses).
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        runtime: Runtime,
        lr_g: float,
        lr_d: float,
        betas: tuple[float, float],
    ) -> None:
        self.runtime = runtime
        self.generator = runtime.module(generator)
        self.discriminator = runtime.module(discriminator)
        self._g = runtime.compiled(self.generator)
        self._d = runtime.compiled(self.discriminator)
        # Only the live weights are optimised; an EMA copy has requires_grad off.
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.opt_g = runtime.adam(g_params, lr=lr_g, betas=betas)
        self.opt_d = runtime.adam(self.discriminator.parameters(), lr=lr_d, betas=betas)

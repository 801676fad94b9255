"""A U-Net vessel segmenter used to score datasets (TSTR) and as a feature encoder.

The network is ours (no pretrained weights), so its features can be used for seg-FID/KID
without downloading anything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.transforms import to_device


class PairLike(Protocol):
    """What the segmenter needs of a `models.data.FundusPair`."""

    @property
    def name(self) -> str: ...
    @property
    def image(self) -> np.ndarray: ...
    @property
    def mask(self) -> np.ndarray: ...
    @property
    def fov(self) -> np.ndarray: ...


ProgressFn = Callable[[int, dict[str, float]], None]


class GroupBatchNorm(nn.Module):
    """Batch norm with its own statistics and affine weights for each group of training
    data, the group chosen by `UNet.normalising_as`; group 0's normalises outside it.

    One batch norm shared by real and synthetic patches normalises the real test images
    with statistics half drawn from synthetic ones. On DRIVE at 128 px its own norms for
    the synthetic half of each batch lifted real + synthetic from F1 0.808 and 0.812 to
    0.814 and 0.818 (real 0.818; docs/drive.md, "Batch norm for each group").
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(groups))
        self.group = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self.group](x)


def _norm(channels: int, groups: int) -> nn.Module:
    # A plain BatchNorm2d for one group keeps single-group state dicts as they were.
    return nn.BatchNorm2d(channels) if groups == 1 else GroupBatchNorm(channels, groups)


def _block(in_ch: int, out_ch: int, norm_groups: int) -> nn.Sequential:
    # Bias is redundant before batch norm.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        _norm(out_ch, norm_groups),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        _norm(out_ch, norm_groups),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Ronneberger-style U-Net: `levels` poolings, widths base * 2**i, logits out.

    Input height and width must be multiples of 2**levels (`predict` pads for you).
    `norm_groups` > 1 gives each group of training data its own batch norms
    (`GroupBatchNorm`).
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 1,
        *,
        levels: int = 4,
        base: int = 32,
        norm_groups: int = 1,
    ):
        super().__init__()
        if levels < 1 or base < 1 or norm_groups < 1:
            raise ValueError("levels, base and norm_groups must be positive")
        self.levels = levels
        self.base = base
        widths = [base * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList()
        ch = in_ch
        for w in widths[:-1]:
            self.down.append(_block(ch, w, norm_groups))
            ch = w
        self.bottleneck = _block(ch, widths[-1], norm_groups)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(w * 2, w, 2, stride=2))
            self.up_blocks.append(_block(w * 2, w, norm_groups))
        self.head = nn.Conv2d(widths[0], out_ch, 1)

    @property
    def feature_dim(self) -> int:
        return self.base * 2**self.levels

    @contextmanager
    def normalising_as(self, group: int) -> Iterator[None]:
        """Inside, every `GroupBatchNorm` uses (and trains) `group`'s norms."""
        norms = [m for m in self.modules() if isinstance(m, GroupBatchNorm)]
        for m in norms:
            m.group = group
        try:
            yield
        finally:
            for m in norms:
                m.group = 0

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Bottleneck feature map and the skip tensors."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.bottleneck(x), skips

    def forward(self, x: Tensor) -> Tensor:
        x, skips = self.encode(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def image_to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    # No contrast normalisation: local normalisation of the green channel lifted the real
    # arm (F1 0.765 against 0.740 on DRIVE at 128 px) but brought out painted background
    # texture as vessels, doubling the synthetic-only gap (docs/drive.md, "The segmenter
    # reads raw RGB").
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def _pair_tensor(pair: PairLike) -> Tensor:
    """Image, mask and FOV stacked as (5, H, W) so one crop/flip moves all of them."""
    mask = torch.from_numpy(np.asarray(pair.mask, dtype=np.float32))[None]
    fov = torch.from_numpy(np.asarray(pair.fov, dtype=np.float32))[None]
    return torch.cat([image_to_tensor(pair.image), mask.clamp(0, 1), fov.clamp(0, 1)], dim=0)


def fov_loss(logits: Tensor, mask: Tensor, fov: Tensor, *, eps: float = 1.0) -> dict[str, Tensor]:
    """BCE + soft Dice, both over FOV pixels only (outside the FOV is not the task)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    bce = (bce * fov).sum() / fov.sum().clamp_min(1.0)
    prob = torch.sigmoid(logits) * fov
    inter = (prob * mask).sum()
    dice = 1.0 - (2 * inter + eps) / (prob.sum() + (mask * fov).sum() + eps)
    return {"loss": bce + dice, "bce": bce, "dice": dice}


def _random_batch(
    data: Sequence[Tensor],
    batch_size: int,
    crop: int,
    gen: torch.Generator,
    groups: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """Random crop x crop patches with random flips and transposes (so all 8 rotations and
    reflections), identical on all five channels.

    Without `groups` every patch comes from a uniformly drawn item. With them (lists of
    indices into `data`), patch i comes from group i mod len(groups), uniformly within it.
    """
    out = []
    for i in range(batch_size):
        members = range(len(data)) if groups is None else groups[i % len(groups)]
        item = data[members[int(torch.randint(len(members), (1,), generator=gen))]]
        _, h, w = item.shape
        ch, cw = min(crop, h), min(crop, w)
        y = int(torch.randint(h - ch + 1, (1,), generator=gen))
        x = int(torch.randint(w - cw + 1, (1,), generator=gen))
        patch = item[:, y : y + ch, x : x + cw]
        # Images smaller than the crop are zero-padded (FOV 0 there) so sizes can mix.
        patch = F.pad(patch, (0, crop - cw, 0, crop - ch))
        if bool(torch.rand(1, generator=gen) < 0.5):
            patch = patch.flip(2)
        if bool(torch.rand(1, generator=gen) < 0.5):
            patch = patch.flip(1)
        if bool(torch.rand(1, generator=gen) < 0.5):
            patch = patch.transpose(1, 2)
        out.append(patch)
    return torch.stack(out)


def train_segmenter(
    pairs: Sequence[PairLike],
    *,
    steps: int,
    batch_size: int = 4,
    crop: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    levels: int = 4,
    base: int = 32,
    lr: float = 1e-3,
    groups: Sequence[Hashable] | None = None,
    on_progress: ProgressFn | None = None,
    progress_every: int = 1,
) -> UNet:
    """Train a U-Net on `pairs` with Adam and return it in eval mode.

    Each step draws `batch_size` random `crop` x `crop` patches (zero-padded with FOV 0 where
    an image is smaller) with the same flip/transpose on image, mask and FOV. `crop` must be
    a multiple of 2**levels. Adam with a cosine-decayed learning rate. `groups`, one label
    per pair (e.g. "real", "synthetic"), makes every batch draw equally from each label, so
    a large group cannot crowd out a small one, and gives each label its own batch norms
    (`GroupBatchNorm`): the label of the first pair keeps its norms for the returned model,
    the others' serve only in training. The loss is then the mean of each label's
    loss over its own patches. `on_progress(step, losses)` is called every
    `progress_every` steps and after the last, with the losses averaged since the last call.
    Deterministic on CPU for a given seed.
    """
    if not pairs:
        raise ValueError("no training pairs")
    if groups is not None and len(groups) != len(pairs):
        raise ValueError(f"{len(groups)} group labels for {len(pairs)} pairs")
    if steps < 0:
        raise ValueError("steps must be >= 0")
    if progress_every < 1:
        raise ValueError(f"progress_every must be >= 1, got {progress_every}")
    if crop % 2**levels:
        raise ValueError(f"crop {crop} is not a multiple of 2**levels = {2**levels}")
    members = None
    if groups is not None:
        by_label: dict[Hashable, list[int]] = {}
        for i, label in enumerate(groups):
            by_label.setdefault(label, []).append(i)
        members = list(by_label.values())
        if batch_size < len(members):
            raise ValueError(f"batch_size {batch_size} is below the {len(members)} groups")
    norm_groups = len(members) if members else 1
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    # Seed the weight init without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(3, 1, levels=levels, base=base, norm_groups=norm_groups)
    model = model.to(device)
    data = [_pair_tensor(p) for p in pairs]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    model.train()
    sums: dict[str, Tensor] = {}
    since = 0
    for step in range(1, steps + 1):
        batch = to_device(_random_batch(data, batch_size, crop, gen, members), device)
        batch = _pad_to_multiple(batch, 2**levels)
        losses = _group_losses(model, batch, norm_groups)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        sched.step()
        if on_progress is None:
            continue
        # Summed on the device and read once per report: reading a CUDA loss every step
        # would make the host wait for each step before queueing the next.
        for k, v in losses.items():
            sums[k] = sums[k] + v.detach() if k in sums else v.detach()
        since += 1
        if step % progress_every == 0 or step == steps:
            on_progress(step, {k: float(v) / since for k, v in sums.items()})
            sums, since = {}, 0
    return model.eval()


def _group_losses(model: UNet, batch: Tensor, groups: int) -> dict[str, Tensor]:
    """`fov_loss` of each group's patches (patch i is group i mod `groups`, as
    `_random_batch` draws them) through that group's norms, averaged over the groups."""
    per_group = []
    for group in range(groups):
        part = batch[group::groups]
        with model.normalising_as(group):
            per_group.append(fov_loss(model(part[:, :3]), part[:, 3:4], part[:, 4:5]))
    return {k: torch.stack([g[k] for g in per_group]).mean() for k in per_group[0]}


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    # Zero padding: padded pixels also get FOV 0, so they never count in the loss.
    return F.pad(x, (0, pw, 0, ph))


def _model_levels(model: nn.Module) -> int:
    return int(getattr(model, "levels", 4))


@torch.no_grad()
def predict(
    model: nn.Module, pairs: Sequence[PairLike], *, device: str | torch.device = "cpu"
) -> list[np.ndarray]:
    """Vessel probability maps (H, W) float32 for whole images, one image at a time.

    Images are zero-padded at the bottom/right to a multiple of 2**levels and cropped back.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    multiple = 2 ** _model_levels(model)
    out = []
    for pair in pairs:
        x = image_to_tensor(pair.image)[None].to(device)
        h, w = x.shape[-2:]
        logits = model(_pad_to_multiple(x, multiple))[0, 0, :h, :w]
        out.append(torch.sigmoid(logits).float().cpu().numpy())
    return out


@torch.no_grad()
def encoder_features(
    model: UNet, images: Sequence[np.ndarray], *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Global-average-pooled bottleneck features, (N, model.feature_dim) float64.

    Takes (H, W, 3) uint8 images so both real and synthetic sets go through the same path.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    multiple = 2**model.levels
    feats = []
    for image in images:
        x = _pad_to_multiple(image_to_tensor(image)[None].to(device), multiple)
        bottleneck, _ = model.encode(x)
        feats.append(bottleneck.mean(dim=(2, 3))[0].double().cpu().numpy())
    if not feats:
        return np.zeros((0, model.feature_dim))
    return np.stack(feats)

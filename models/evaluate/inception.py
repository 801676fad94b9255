"""The FID variant of Inception-v3, in plain torch, for a locally provided weights file.

Published FIDs are measured with the Inception-v3 graph of TensorFlow's 2015-12-05
ImageNet release, not with torchvision's Inception-v3. pytorch-fid ports that graph's
weights to a PyTorch state dict, ``pt_inception-2015-12-05-6726825d.pth``; the network
below has the same module names, so that file loads unchanged with ``strict=True``. This
package never downloads it: the evaluation computes Inception-FID only when a path to it
is configured (see features.inception_feature_report).

The layout follows torchvision's Inception3 with ``aux_logits=False`` and 1008 classes
(the TF graph's label count), every convolution a bias-free conv followed by
BatchNorm(eps=1e-3) and ReLU. The TF graph differs from torchvision's in its pooling:

- the pool branch of the A, C and first E blocks (Mixed_5b-d, Mixed_6b-e, Mixed_7b)
  averages over a 3x3 window without counting the zero padding (TF's avg_pool);
- the pool branch of the last E block (Mixed_7c) is a 3x3 max pool.

Input: RGB in [0, 1], resized to 299x299 (bilinear, align_corners=False, no antialias, as
pytorch-fid does) and scaled to [-1, 1]. Output: the 2048-d global average pool of
Mixed_7c ("pool3"), the FID feature. The classifier (``fc``) is kept only so the file
loads strictly; FID does not use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
REFERENCE_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


class InceptionWeightsError(ValueError):
    """The configured Inception weights file is missing, unreadable or of another network."""


class ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU; state keys ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        *,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool_3x3(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Stride-1, same-size 3x3 pooling: TF's average (padding not counted) or max."""
    if kind == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 (out 224 + pool_ch)."""

    pool = "avg"

    def __init__(self, in_ch: int, pool_ch: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_ch, pool_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(pool_3x3(x, self.pool)),
            ],
            1,
        )


class BlockB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (out 480 + in_ch)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 / 7x1), mid width `c7`; out 768."""

    pool = "avg"

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for conv in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            double = conv(double)
        return torch.cat(
            [self.branch1x1(x), seven, double, self.branch_pool(pool_3x3(x, self.pool))], 1
        )


class BlockD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 (out 512 + in_ch)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tower = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            tower = conv(tower)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), tower, F.max_pool2d(x, 3, stride=2)], 1
        )


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 heads (out 2048); `pool` is "avg" or "max"."""

    def __init__(self, in_ch: int, *, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(mid),
                self.branch3x3_2b(mid),
                self.branch3x3dbl_3a(dbl),
                self.branch3x3dbl_3b(dbl),
                self.branch_pool(pool_3x3(x, self.pool)),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in TF's FID graph; ``forward`` maps (N, 3, H, W) RGB in [0, 1] to the
    (N, 2048) pool3 features. Randomly initialised: load the reference weights with
    `load_fid_inception`."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_ch=32)
        self.Mixed_5c = BlockA(256, pool_ch=64)
        self.Mixed_5d = BlockA(288, pool_ch=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))


def _describe(keys: Sequence[str], what: str) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} {what} ({shown})"


def load_fid_inception(path: str | Path, *, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The network with the weights in `path` (pytorch-fid's REFERENCE_WEIGHTS file), in
    eval mode on `device`. Raises InceptionWeightsError, naming the file, when it is
    missing, unreadable or not a state dict of this network."""
    path = Path(path)
    if not path.is_file():
        raise InceptionWeightsError(
            f"Inception weights file {path} does not exist "
            f"(expected pytorch-fid's {REFERENCE_WEIGHTS})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle means "unreadable"
        raise InceptionWeightsError(
            f"cannot read Inception weights from {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{path} does not hold a state dict of tensors")
    with torch.device("meta"):  # shapes only: no time spent on an init that is overwritten
        net = FIDInceptionV3()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        _describe(found, what)
        for found, what in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (reshaped, "wrong shapes"),
        )
        if found
    ]
    if problems:
        raise InceptionWeightsError(
            f"{path} is not the FID Inception-v3 state dict ({REFERENCE_WEIGHTS}): "
            + "; ".join(problems)
        )
    net.load_state_dict(state, strict=True, assign=True)
    net = net.float().to(device).eval()
    net.requires_grad_(False)
    return net


def weights_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a weights file, recorded with the figures it produced."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _batches(images: Sequence[np.ndarray], size: int) -> Iterator[Sequence[np.ndarray]]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


@torch.no_grad()
def inception_features(
    net: FIDInceptionV3,
    images: Sequence[np.ndarray],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """(N, 2048) float64 pool3 features of (H, W, 3) uint8 images (sizes may differ)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    net.eval()
    out = []
    for batch in _batches(images, batch_size):
        resized = []
        for image in batch:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected (H, W, 3) uint8 images, got {image.shape} {image.dtype}"
                )
            x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
            x = x.permute(2, 0, 1)[None].float() / 255
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                x = F.interpolate(
                    x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
                )
            resized.append(x)
        out.append(net(torch.cat(resized)).double().cpu().numpy())
    if not out:
        return np.zeros((0, FEATURE_DIM))
    return np.concatenate(out)

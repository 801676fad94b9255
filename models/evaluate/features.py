"""Feature distances between real and synthetic images: seg-FID/KID and Inception-FID/KID.

seg-FID/seg-KID: the feature extractor is a network the project owns, the encoder of the
U-Net segmenter trained on real pairs (the TSTR real arm), its bottleneck global-average-
pooled. They are comparable between datasets evaluated with the same encoder, not with
published Inception FIDs.

Inception-FID/Inception-KID: the pool3 features of TF's FID Inception-v3
(models/evaluate/inception.py), computed only when its weights file is provided locally
(it is never downloaded). With pytorch-fid's reference file they are comparable with
published FIDs, up to resizing and numeric backend differences.

FID: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 torch;
both square roots come from symmetric eigendecompositions (negative eigenvalues from
round-off clipped to 0), which is exact for PSD covariances and needs no scipy.

KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over random subsets (Binkowski et al., 2018).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from models.evaluate.inception import FIDInceptionV3, inception_features
from models.evaluate.segmenter import UNet, encoder_features


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D), each with at least 2 rows."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"feature shapes {tuple(x.shape)} and {tuple(y.shape)} do not match")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("FID needs at least 2 samples per set")
    mu_x, mu_y = x.mean(0), y.mean(0)
    # atleast_2d: torch.cov returns a scalar for one-dimensional features.
    cov_x, cov_y = torch.atleast_2d(torch.cov(x.T)), torch.atleast_2d(torch.cov(y.T))
    root_x = _sqrtm_psd(cov_x)
    middle = root_x @ cov_y @ root_x
    # Symmetrise: round-off makes `middle` slightly asymmetric, and eigh assumes symmetry.
    middle = (middle + middle.T) / 2
    cross = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()
    fid = (mu_x - mu_y).square().sum() + torch.trace(cov_x) + torch.trace(cov_y) - 2 * cross
    return float(fid.clamp_min(0))


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 (diagonal terms of the within-set kernels left out); may be < 0."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def kernel_inception_distance(
    a: np.ndarray,
    b: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over subsets). Subsets draw min(subset_size, N, M) rows of each set
    without replacement; with sets smaller than subset_size every subset is the whole set
    and std is 0."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 samples per set")
    if size == len(x) == len(y):
        value = mmd2_unbiased(x, y)
        return value, 0.0
    gen = torch.Generator().manual_seed(seed)
    values = [
        mmd2_unbiased(
            x[torch.randperm(len(x), generator=gen)[:size]],
            y[torch.randperm(len(y), generator=gen)[:size]],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def distance_report(
    features: Callable[[Sequence[np.ndarray]], np.ndarray],
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    *,
    name: str,
    space: str,
    baseline: Sequence[np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``{name}_fid`` and ``{name}_kid`` of `synthetic` against `real` images in the feature
    space that `features` maps a list of images into (described by `space`).

    `baseline`, if given (e.g. the real training images when `real` is the test split),
    is scored against `real` the same way: the distance between two real sets, to read the
    synthetic figure against.
    """
    f_real, f_syn = features(real), features(synthetic)
    kid, kid_std = kernel_inception_distance(f_real, f_syn, seed=seed)
    report: dict[str, Any] = {
        f"{name}_fid": frechet_distance(f_real, f_syn),
        f"{name}_kid": kid,
        f"{name}_kid_std": kid_std,
        "feature_dim": int(f_real.shape[1]),
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "features": space,
        "baseline_fid": None,
        "baseline_kid": None,
    }
    if baseline is not None and len(baseline) >= 2:
        f_base = features(baseline)
        report["baseline_fid"] = frechet_distance(f_real, f_base)
        report["baseline_kid"] = kernel_inception_distance(f_real, f_base, seed=seed)[0]
        report["n_baseline"] = len(baseline)
    return report


def seg_feature_report(
    encoder: UNet,
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    *,
    baseline: Sequence[np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """seg-FID and seg-KID (see `distance_report`) in the segmenter's bottleneck."""
    return distance_report(
        lambda images: encoder_features(encoder, images, device=device),
        real,
        synthetic,
        name="seg",
        space="real-trained U-Net segmenter, global-average-pooled bottleneck",
        baseline=baseline,
        seed=seed,
    )


def inception_feature_report(
    network: FIDInceptionV3,
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    *,
    baseline: Sequence[np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Inception-FID and Inception-KID (see `distance_report`) in the pool3 space of
    `network` (see models.evaluate.inception.load_fid_inception).

    With pytorch-fid's reference weights these are the usual FID/KID (up to resizing and
    backend differences).
    """
    return distance_report(
        lambda images: inception_features(network, images, device=device, batch_size=batch_size),
        real,
        synthetic,
        name="inception",
        space="FID Inception-v3 (TF 2015-12-05 graph), pool3",
        baseline=baseline,
        seed=seed,
    )

"""Vessel-tree statistics of binary masks, to compare synthetic geometry with real.

Definitions (all on the mask restricted to the FOV, pixels as unit squares):

- **vessel fraction**: vessel pixels / FOV pixels, per image.
- **skeleton**: Zhang–Suen thinning (vectorised numpy, 8-connected one-pixel lines).
- **width** at each skeleton pixel: 2 * d - 1, where d is the Euclidean distance from the
  pixel centre to the nearest background pixel centre (outside the image counts as
  background), searched up to `max_radius`. A line of width w measured across its centre
  gives exactly w for odd w; widths are capped at 2 * max_radius - 1.
- **branch points**: skeleton pixels whose 8-neighbourhood, walked round, has >= 3 separate
  runs of skeleton pixels (the crossing number). Counting neighbours instead would see a
  branch at every staircase corner of a diagonal line. Adjacent branch pixels (one junction
  thinned into a small cluster) count once.
- **tortuosity** per segment (a connected piece of skeleton once the branch points and
  their neighbours are removed, at least `min_segment` pixels): arc length / chord length.
  Arc length sums the links between 8-neighbouring pixels (1 straight, sqrt 2 diagonal;
  a diagonal link is skipped where an L-shaped pair of straight links already joins the
  same pixels). The chord joins the two end pixels (one neighbour each); when a segment
  does not have exactly two, it joins the two farthest-apart pixels. Approximate: a
  straight line gives 1.0, pixel staircases add a few per cent.
- **pieces**: 8-connected pieces of the mask, per image. **connected share**: the share of
  vessel pixels in pieces of at least `min_piece` pixels, per image (none for an empty
  mask). A generator can match the vessel fraction with short, scattered strokes where real
  vessels run on; these two see the difference. DRIVE's training masks at 128 px: 78.5
  pieces and a share of 0.862 in pieces of 20 px or more.
- **orientation**: the angle between each vessel edge and the nearest image axis, 0 to 45
  degrees, from the gradient of the mask blurred with a Gaussian of `edge_sigma` px (which
  turns pixel staircases into smooth slopes), weighted by the gradient's magnitude.
  **axis-aligned fraction**: the weight within `AXIS_BAND` degrees of an axis; edges at
  uniformly random angles give AXIS_BAND / 45 = 0.22. Generators that build images from
  square kernels and nearest-neighbour upsampling can draw mazes of horizontal and vertical
  ridges, which this measures and the other statistics miss.
- **overlap between samples**: the Dice of two masks of the same set (pairs where both are
  empty are left out). Every statistic above can match the real masks while a generator
  draws one layout for every noise; this sees it. DRIVE's training masks at 128 px: a
  mean of 0.15 (0.07 to 0.28); 64 published masks of a Stage I that drew one dense mesh
  for every noise: 0.81.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.regions import component_labels

# P2..P9 of Zhang & Suen (1984): N, NE, E, SE, S, SW, W, NW.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
WIDTH_BIN = 0.5
TORTUOSITY_EDGES = np.round(np.arange(1.0, 3.0001, 0.05), 2)
ORIENTATION_EDGES = np.arange(0.0, 45.0001, 5.0)
AXIS_BAND = 10.0  # degrees
MIN_PIECE = 20  # pixels; app/pages/views.py names it in a label
# Blurred edges weaker than this (a sharp unit step blurred by sigma 1.5 peaks at 0.27) are
# the faint tails of an edge, not edges.
EDGE_MIN_GRADIENT = 0.05
# Masks compared two by two: the first this many (32,640 pairs), so a large dataset costs
# what a small one does.
OVERLAP_SAMPLES = 256


def _ring(img: np.ndarray) -> np.ndarray:
    """(8, H, W) neighbour values P2..P9 of every pixel (zero outside the image)."""
    h, w = img.shape
    p = np.pad(img, 1)
    return np.stack([p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _RING])


def _crossings(ring: np.ndarray) -> np.ndarray:
    """Number of 0 -> 1 transitions walking P2..P9 and back to P2."""
    return ((ring == 0) & (np.roll(ring, -1, axis=0) == 1)).sum(axis=0)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning of a binary mask; returns a bool array of the same shape."""
    img = (np.asarray(mask) > 0).astype(np.uint8)
    if not img.any():
        return img.astype(bool)
    # Thinning never leaves the bounding box, so work inside it (plus a margin) only.
    ys, xs = np.nonzero(img)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = img[y0:y1, x0:x1].copy()
    while True:
        changed = False
        for first in (True, False):
            n = _ring(sub)
            count = n.sum(axis=0)
            a = _crossings(n)
            if first:
                c1, c2 = n[0] * n[2] * n[4], n[2] * n[4] * n[6]
            else:
                c1, c2 = n[0] * n[2] * n[6], n[0] * n[4] * n[6]
            remove = (sub == 1) & (count >= 2) & (count <= 6) & (a == 1) & (c1 == 0) & (c2 == 0)
            if remove.any():
                sub[remove] = 0
                changed = True
        if not changed:
            break
    out = np.zeros(img.shape, dtype=bool)
    out[y0:y1, x0:x1] = sub.astype(bool)
    return out


def _widths(vessel: np.ndarray, skel_coords: np.ndarray, max_radius: int) -> np.ndarray:
    r = max_radius
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    dist = np.sqrt(dy**2 + dx**2).ravel()
    order = np.argsort(dist, kind="stable")
    order = order[(dist[order] > 0) & (dist[order] <= r)]
    dy, dx, dist = dy.ravel()[order], dx.ravel()[order], dist[order]
    padded = np.pad(vessel, r)
    widths = np.empty(len(skel_coords))
    # Chunks keep the (points x offsets) lookup table small on large masks.
    for start in range(0, len(skel_coords), 4096):
        c = skel_coords[start : start + 4096]
        bg = ~padded[c[:, :1] + r + dy[None], c[:, 1:] + r + dx[None]]
        found = bg.any(axis=1)
        d = np.where(found, dist[bg.argmax(axis=1)], r)
        widths[start : start + 4096] = 2 * d - 1
    return widths


def _segment_tortuosity(skel: np.ndarray, branch: np.ndarray, min_segment: int) -> list[float]:
    near_branch = _ring(branch.astype(np.uint8)).any(axis=0) | branch
    seg = skel & ~near_branch
    coords = np.argwhere(seg)
    if len(coords) == 0:
        return []
    labels = component_labels(coords, seg.shape)
    h, w = seg.shape
    p = np.pad(seg, 1)

    def at(dy: int, dx: int) -> np.ndarray:
        return p[coords[:, 0] + 1 + dy, coords[:, 1] + 1 + dx]

    # Links counted once, from the upper/left pixel.
    arc = at(0, 1).astype(float) + at(1, 0)
    arc += np.sqrt(2) * (at(1, 1) & ~at(0, 1) & ~at(1, 0))
    arc += np.sqrt(2) * (at(1, -1) & ~at(0, -1) & ~at(1, 0))
    degree = _ring(seg.astype(np.uint8)).sum(axis=0)[coords[:, 0], coords[:, 1]]
    uniq, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    arc_len = np.bincount(inverse, weights=arc)
    out = []
    for i in np.nonzero(sizes >= min_segment)[0]:
        members = coords[inverse == i]
        ends = members[degree[inverse == i] == 1]
        if len(ends) == 2:
            chord = float(np.hypot(*(ends[0] - ends[1])))
        else:
            diff = members[:, None, :] - members[None, :, :]
            chord = float(np.sqrt((diff**2).sum(-1).max()))
        if chord > 0:
            out.append(float(arc_len[i]) / chord)
    return out


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, zero outside the image."""
    r = max(1, int(3 * sigma + 0.5))
    x = np.arange(-r, r + 1)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img, ((r, r), (0, 0)))
    img = sum(k[i] * p[i : i + h] for i in range(2 * r + 1))
    p = np.pad(img, ((0, 0), (r, r)))
    return sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))


def edge_orientations(vessel: np.ndarray, *, sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """(angles to the nearest image axis in degrees, weights) of a binary mask's edges."""
    gy, gx = np.gradient(_gaussian_blur(np.asarray(vessel, dtype=np.float64), sigma))
    magnitude = np.hypot(gx, gy)
    edge = magnitude > EDGE_MIN_GRADIENT
    angle = np.degrees(np.arctan2(gy[edge], gx[edge])) % 90.0
    return np.minimum(angle, 90.0 - angle), magnitude[edge]


def mask_stats(
    mask: np.ndarray,
    fov: np.ndarray,
    *,
    min_segment: int = 10,
    max_radius: int = 16,
    edge_sigma: float = 1.5,
    min_piece: int = MIN_PIECE,
) -> dict[str, Any]:
    """Statistics of one mask: fraction, widths, branch points, tortuosities, pieces and
    edge orientations (raw values)."""
    inside = np.asarray(fov) > 0
    vessel = (np.asarray(mask) > 0) & inside
    angles, weights = edge_orientations(vessel, sigma=edge_sigma)
    skel = skeletonize(vessel)
    skel_coords = np.argwhere(skel)
    crossings = _crossings(_ring(skel.astype(np.uint8)))
    branch = skel & (crossings >= 3)
    branch_coords = np.argwhere(branch)
    n_branch = len(np.unique(component_labels(branch_coords, skel.shape)))
    _, piece_sizes = np.unique(
        component_labels(np.argwhere(vessel), vessel.shape), return_counts=True
    )
    total = int(piece_sizes.sum())
    return {
        "vessel_fraction": float(vessel.sum() / max(int(inside.sum()), 1)),
        "skeleton_pixels": len(skel_coords),
        "branch_points": n_branch,
        "pieces": len(piece_sizes),
        "connected_share": float(piece_sizes[piece_sizes >= min_piece].sum() / total)
        if total
        else None,
        "widths": _widths(vessel, skel_coords, max_radius),
        "tortuosity": np.asarray(_segment_tortuosity(skel, branch, min_segment)),
        "edge_angles": angles,
        "edge_weights": weights,
    }


def _histogram(
    values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, list[float]]:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges, weights=weights)
    total = counts.sum() or 1
    return {"edges": [float(e) for e in edges], "density": (counts / total).round(6).tolist()}


def _orientation(angles: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    total = float(weights.sum())
    return {
        "axis_aligned": float(weights[angles < AXIS_BAND].sum() / total) if total > 0 else None,
        "mean": float((angles * weights).sum() / total) if total > 0 else None,
        "histogram": _histogram(angles, ORIENTATION_EDGES, weights),
    }


def _summary(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, "median": None, "std": None, "p90": None}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "std": float(np.std(values)),
        "p90": float(np.quantile(values, 0.9)),
    }


def vessel_stats(
    masks: Sequence[np.ndarray],
    fovs: Sequence[np.ndarray],
    *,
    min_segment: int = 10,
    max_radius: int = 16,
    edge_sigma: float = 1.5,
    min_piece: int = MIN_PIECE,
) -> dict[str, Any]:
    """Distributions and summaries of vessel statistics over a set of masks.

    Returns ``per_image`` (vessel_fraction, branch_points, pieces, connected_share and
    skeleton_pixels lists), ``width``, ``tortuosity`` and ``orientation`` (summary of pooled
    values + normalised histogram on fixed edges, so two sets can be overlaid and compared),
    and ``summary`` (flat headline numbers).
    """
    if len(masks) != len(fovs):
        raise ValueError(f"{len(masks)} masks but {len(fovs)} FOV masks")
    per = [
        mask_stats(
            m,
            f,
            min_segment=min_segment,
            max_radius=max_radius,
            edge_sigma=edge_sigma,
            min_piece=min_piece,
        )
        for m, f in zip(masks, fovs, strict=True)
    ]
    widths = np.concatenate([p["widths"] for p in per]) if per else np.zeros(0)
    tort = np.concatenate([p["tortuosity"] for p in per]) if per else np.zeros(0)
    angles = np.concatenate([p["edge_angles"] for p in per]) if per else np.zeros(0)
    edge_weights = np.concatenate([p["edge_weights"] for p in per]) if per else np.zeros(0)
    orientation = _orientation(angles, edge_weights)
    width, tortuosity = _summary(widths), _summary(tort)
    width_edges = np.arange(0.0, 2 * max_radius + WIDTH_BIN / 2, WIDTH_BIN)
    fractions = [p["vessel_fraction"] for p in per]
    branches = [p["branch_points"] for p in per]
    pieces = [p["pieces"] for p in per]
    shares = [p["connected_share"] for p in per]
    defined_shares = [s for s in shares if s is not None]
    return {
        "n_images": len(per),
        "per_image": {
            "vessel_fraction": fractions,
            "branch_points": branches,
            "pieces": pieces,
            "connected_share": shares,
            "skeleton_pixels": [p["skeleton_pixels"] for p in per],
        },
        "width": {**width, "histogram": _histogram(widths, width_edges)},
        "tortuosity": {**tortuosity, "histogram": _histogram(tort, TORTUOSITY_EDGES)},
        "orientation": orientation,
        "summary": {
            "vessel_fraction_mean": float(np.mean(fractions)) if per else None,
            "branch_points_mean": float(np.mean(branches)) if per else None,
            "pieces_mean": float(np.mean(pieces)) if per else None,
            "connected_share_mean": float(np.mean(defined_shares)) if defined_shares else None,
            "width_mean": width["mean"],
            "width_median": width["median"],
            "tortuosity_median": tortuosity["median"],
            "tortuosity_mean": tortuosity["mean"],
            "axis_aligned": orientation["axis_aligned"],
        },
        "definitions": {
            "min_segment": min_segment,
            "max_radius": max_radius,
            "edge_sigma": edge_sigma,
            "axis_band_degrees": AXIS_BAND,
            "min_piece": min_piece,
        },
    }


def histogram_w1(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Wasserstein-1 distance between two histograms on the same edges."""
    edges = np.asarray(a["edges"])
    if not np.array_equal(edges, np.asarray(b["edges"])):
        raise ValueError("histograms have different edges")
    cdf_gap = np.abs(np.cumsum(a["density"]) - np.cumsum(b["density"]))
    return float((cdf_gap * np.diff(edges)).sum())


def compare_vessel_stats(real: dict[str, Any], synthetic: dict[str, Any]) -> dict[str, Any]:
    """Synthetic-minus-real differences of the summaries, and W1 between distributions."""
    diff = {}
    for key, r in real["summary"].items():
        s = synthetic["summary"].get(key)
        diff[key] = None if r is None or s is None else float(s - r)
    return {
        "difference": diff,
        **{
            f"{key}_w1": histogram_w1(real[key]["histogram"], synthetic[key]["histogram"])
            for key in ("width", "tortuosity", "orientation")
        },
    }


def sample_overlap(masks: Sequence[np.ndarray], *, limit: int = OVERLAP_SAMPLES) -> np.ndarray:
    """Dice of every two of the first ``limit`` masks (all the same shape), one value per
    pair in which either mask has a vessel."""
    if limit < 2:
        raise ValueError(f"limit must be at least 2, got {limit}")
    kept = [np.asarray(m) for m in masks[:limit]]
    if len({m.shape for m in kept}) > 1:
        raise ValueError("masks compared for overlap must share one shape")
    if len(kept) < 2:
        return np.zeros(0)
    # float32 counts exactly up to 2**24 pixels per mask (4,096 px square).
    flat = np.stack([m.reshape(-1) > 0 for m in kept]).astype(np.float32)
    shared = flat @ flat.T
    sizes = flat.sum(axis=1)
    rows, cols = np.triu_indices(len(kept), k=1)
    total = sizes[rows] + sizes[cols]
    drawn = total > 0
    return (2 * shared[rows, cols][drawn] / total[drawn]).astype(np.float64)

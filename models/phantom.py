"""Procedural retinal fundus phantoms: the built-in training data and test fixture.

A phantom is drawn in three steps. The vessel tree is grown in size-independent units (1.0 is
the image side) so one seed gives the same anatomy at every resolution. Branches are then
rasterised thickest-first until the vessel fraction inside the field of view reaches a
per-seed target drawn from DRIVE's range; stopping on a measured fraction rather than a fixed
depth keeps the fraction plausible at 64 px (where every vessel is at least 1 px wide) and at
512 px alike. Finally the photograph is composed from the same rasterised labels, so image and
mask agree pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.data import FundusPair

# Anatomy in units of the image side, loosely fitted to DRIVE (565 px wide, FOV ~540 px,
# optic disc ~80 px across, fovea ~2.5 disc diameters temporal to the disc).
FOV_RADIUS = 0.47
DISC_RADIUS = 0.07
MACULA_DISTANCE = 2.5 * 2 * DISC_RADIUS
FOVEA_AVASCULAR = 0.035

TRUNK_WIDTH = 0.017  # main vein near the disc, ~10 px at 565 px
MIN_WIDTH = 0.0028  # growth stops below this; thinner DRIVE capillaries are not annotated
STEP = 0.008  # polyline step; small enough that bends look smooth at 512 px
MAX_BRANCHES = 700

# Vessel fraction inside the FOV; DRIVE's manual annotations span roughly 7-13 %.
FRACTION_RANGE = (0.085, 0.115)

ARTERY, VEIN = 1, 2


@dataclass(frozen=True)
class _Sprout:
    """Where a branch starts. Each carries its own RNG seed so a branch's shape does not
    depend on how many other branches were grown before it (or whether they were at all)."""

    x: float
    y: float
    heading: float  # radians, image coordinates (y down)
    width: float
    length: float
    kind: int
    seed: int
    target: float | None = None  # heading the branch relaxes towards (arcades)
    pull: float = 0.0  # relaxation rate per unit length
    curve: float = 0.0  # constant curvature per unit length


@dataclass
class _Branch:
    points: list[tuple[float, float]]
    widths: list[float]
    kind: int
    children: list[_Sprout] = field(default_factory=list)


def make_phantom(seed: int, size: int = 128) -> FundusPair:
    """One reproducible phantom fundus: RGB image, binary vessel mask and circular FOV."""
    if size < 16:
        raise ValueError(f"phantom size must be at least 16 px, got {size}")
    anatomy_ss, tree_ss, photo_ss = np.random.SeedSequence(seed).spawn(3)
    rng = np.random.default_rng(anatomy_ss)
    side = 1.0 if rng.random() < 0.5 else -1.0  # +1: disc on the right (a left eye)
    disc = (0.5 + side * rng.uniform(0.17, 0.21), 0.5 + rng.uniform(-0.04, 0.04))
    # The fovea sits temporal to the disc and slightly below it.
    macula = (disc[0] - side * MACULA_DISTANCE, disc[1] + rng.uniform(0.0, 0.03))
    target = rng.uniform(*FRACTION_RANGE)

    fov = _fov_disc(size)
    roots = _roots(rng, disc, side)
    labels = _grow_and_draw(np.random.default_rng(tree_ss), roots, macula, size, fov, target)
    mask = ((labels > 0) & fov).astype(np.uint8)
    image = _compose(np.random.default_rng(photo_ss), size, fov, labels, disc, macula)
    return FundusPair(name=f"phantom_{seed}", image=image, mask=mask, fov=fov.astype(np.uint8))


def phantom_pairs(count: int, *, size: int, seed: int = 0) -> list[FundusPair]:
    """`count` phantoms; pair i uses seed `seed * 100003 + i` so sets never overlap in practice."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return [make_phantom(seed * 100003 + i, size) for i in range(count)]


def _fov_disc(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    return (xx - c) ** 2 + (yy - c) ** 2 <= (FOV_RADIUS * size) ** 2


def _roots(rng: np.random.Generator, disc: tuple[float, float], side: float) -> list[_Sprout]:
    """The main vessels leaving the disc: four arcades, each an artery and a vein."""
    temporal = math.pi if side > 0 else 0.0  # heading from the disc towards the macula
    roots: list[_Sprout] = []
    for vertical in (-1.0, 1.0):  # -1 is up in image coordinates
        # s = +1 when turning from the temporal axis towards `vertical` increases the angle.
        s = -vertical * side
        # Temporal arcades leave steeply up/down, then relax towards the horizontal raphe,
        # which makes them arch round the macula.
        for kind, jitter, width_scale in ((VEIN, 0.0, 1.0), (ARTERY, 0.12, 0.8)):
            roots.append(
                _Sprout(
                    *disc,
                    heading=temporal + s * (rng.uniform(1.1, 1.35) + jitter),
                    width=TRUNK_WIDTH * width_scale,
                    length=0.85,
                    kind=kind,
                    seed=int(rng.integers(2**62)),
                    target=temporal - s * rng.uniform(0.1, 0.3),
                    pull=rng.uniform(3.0, 4.5),
                )
            )
        # Nasal vessels are shorter and straighter.
        for kind, width_scale in ((VEIN, 0.75), (ARTERY, 0.6)):
            roots.append(
                _Sprout(
                    *disc,
                    heading=temporal + math.pi - s * rng.uniform(0.4, 1.0),
                    width=TRUNK_WIDTH * width_scale,
                    length=0.45,
                    kind=kind,
                    seed=int(rng.integers(2**62)),
                    curve=rng.normal(0.0, 0.8),
                )
            )
    return roots


def _grow_and_draw(
    rng: np.random.Generator,
    roots: list[_Sprout],
    macula: tuple[float, float],
    size: int,
    fov: np.ndarray,
    target: float,
) -> np.ndarray:
    """Grow the tree generation by generation, drawing each branch as soon as it is grown,
    and stop once the vessel fraction in the FOV reaches `target`.

    Returns a label image: 0 background, 1 artery, 2 vein. Branches of a generation are drawn
    in random order so that stopping part-way through prunes twigs evenly, not one arcade.
    """
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    fov_pixels = float(fov.sum())
    estimate = 0.0
    generation = roots
    drawn = 0
    while generation and drawn < MAX_BRANCHES:
        following: list[_Sprout] = []
        for i in rng.permutation(len(generation)):
            branch = _grow_branch(generation[int(i)], macula)
            following.extend(branch.children)
            estimate += _draw_branch(draw, branch, size)
            drawn += 1
            # Measuring the raster is the slow part: only measure once a cheap length*width
            # estimate says the target could be near.
            if estimate >= 0.8 * target * fov_pixels:
                frac = np.count_nonzero(np.asarray(canvas)[fov]) / fov_pixels
                if frac >= target:
                    return np.asarray(canvas).copy()
                estimate = frac * fov_pixels
        generation = following
    return np.asarray(canvas).copy()


def _grow_branch(sprout: _Sprout, macula: tuple[float, float]) -> _Branch:
    rng = np.random.default_rng(sprout.seed)
    n_steps = max(2, int(sprout.length / STEP))
    # Smoothed random walk of the heading gives gentle tortuosity; drawn up front because
    # per-step RNG calls dominate the cost otherwise.
    kicks = rng.normal(0.0, 0.09, n_steps).tolist()
    x, y, heading, width = sprout.x, sprout.y, sprout.heading, sprout.width
    mx, my = macula
    points = [(x, y)]
    widths = [width]
    children: list[_Sprout] = []
    wander = 0.0
    next_branch = rng.uniform(0.05, 0.1)
    travelled = 0.0
    branch_side = 1.0 if rng.random() < 0.5 else -1.0
    limit2 = (FOV_RADIUS * 0.985) ** 2
    taper = 1.0 - 0.25 * STEP / sprout.length
    for kick in kicks:
        wander = 0.8 * wander + kick
        heading += sprout.curve * STEP + wander * 0.35
        if sprout.target is not None:
            heading += sprout.pull * (sprout.target - heading) * STEP
        x += STEP * math.cos(heading)
        y += STEP * math.sin(heading)
        if (x - 0.5) ** 2 + (y - 0.5) ** 2 > limit2:
            break
        if (x - mx) ** 2 + (y - my) ** 2 < FOVEA_AVASCULAR**2:
            break
        width *= taper
        points.append((x, y))
        widths.append(width)
        travelled += STEP
        if travelled >= next_branch:
            travelled = 0.0
            next_branch = rng.uniform(0.04, 0.09)
            child_w = width * rng.uniform(0.5, 0.8)
            if child_w >= MIN_WIDTH:
                # Murray's law: the parent keeps (w^3 - w_child^3)^(1/3), a little generously
                # so trunks do not thin too fast.
                width = max(MIN_WIDTH, (width**3 - child_w**3) ** (1.0 / 3.0) * 1.05)
                children.append(
                    _Sprout(
                        x,
                        y,
                        heading=heading + branch_side * rng.uniform(0.45, 1.1),
                        width=child_w,
                        length=min(0.6, 20.0 * child_w + rng.uniform(0.03, 0.1)),
                        kind=sprout.kind,
                        seed=int(rng.integers(2**62)),
                        curve=rng.normal(0.0, 0.8),
                    )
                )
                branch_side = -branch_side
        if width < MIN_WIDTH * 0.7:
            break
    return _Branch(points, widths, sprout.kind, children)


def _draw_branch(draw: ImageDraw.ImageDraw, branch: _Branch, size: int) -> float:
    """Draw one tapering polyline; return an estimate of the pixels it covers."""
    if len(branch.points) < 2:
        return 0.0
    pts = [(x * size, y * size) for x, y in branch.points]
    px_w = [max(1, int(round(w * size))) for w in branch.widths]
    covered = 0.0
    start = 0
    # Constant-width runs are drawn as one polyline with round joints; round caps at run ends
    # avoid notches where the width steps down.
    for i in range(1, len(pts) + 1):
        if i == len(pts) or px_w[i] != px_w[start]:
            run = pts[start : min(i + 1, len(pts))]
            w = px_w[start]
            if len(run) >= 2:
                draw.line(run, fill=branch.kind, width=w, joint="curve")
            if w >= 3:
                for x, y in (run[0], run[-1]):
                    r = w / 2.0
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=branch.kind)
            covered += w * STEP * size * (len(run) - 1)
            start = i
    return covered


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    img = Image.fromarray(coarse, "L").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def _compose(
    rng: np.random.Generator,
    size: int,
    fov: np.ndarray,
    labels: np.ndarray,
    disc: tuple[float, float],
    macula: tuple[float, float],
) -> np.ndarray:
    # Pixel centres in image-side units; open grids broadcast, saving full-size temporaries.
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = coords[None, :], coords[:, None]
    r2 = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / FOV_RADIUS**2

    # Background: orange-red choroid, darker towards the rim (vignetting) plus blotchy texture.
    base = np.array(
        [rng.uniform(185, 215), rng.uniform(75, 100), rng.uniform(30, 50)], dtype=np.float32
    )
    vignette = 1.0 - 0.45 * np.minimum(r2, 1.0)
    texture = 1.0 + 0.06 * _smooth_noise(rng, size, 6) + 0.03 * _smooth_noise(rng, size, 24)
    img = base[None, None, :] * (vignette * texture)[..., None]

    # Macula: broad darkening with a darker fovea. It is negligible beyond ~3 widths, so only
    # that window is computed.
    win, wx, wy = _window(macula, 3.0 * 1.3 * DISC_RADIUS, coords)
    d2 = (wx - macula[0]) ** 2 + (wy - macula[1]) ** 2
    mac = 0.22 * np.exp(-d2 / (1.3 * DISC_RADIUS) ** 2) + 0.12 * np.exp(
        -d2 / (0.35 * DISC_RADIUS) ** 2
    )
    img[win] *= (1.0 - mac)[..., None] * np.array([0.95, 1.0, 1.0], dtype=np.float32)

    # Vessels: blurred label maps darken the background, veins more than arteries and the green
    # channel most (haemoglobin absorbs green strongly).
    blur = max(0.45, size / 640.0)
    vein = _blurred((labels == VEIN).astype(np.uint8) * 255, blur)
    artery = _blurred((labels == ARTERY).astype(np.uint8) * 255, blur)
    vein_k = np.array([0.38, 0.6, 0.45], dtype=np.float32)
    artery_k = np.array([0.2, 0.42, 0.3], dtype=np.float32)
    img *= 1.0 - vein[..., None] * vein_k - artery[..., None] * artery_k

    # Optic disc: bright yellow-white with a brighter cup; drawn over the vessel roots so their
    # origin fades into the disc as in photographs.
    win, wx, wy = _window(disc, 1.6 * DISC_RADIUS, coords)
    d_disc = np.sqrt((wx - disc[0]) ** 2 + (wy - disc[1]) ** 2) / DISC_RADIUS
    rim = 1.0 / (1.0 + np.exp(np.clip((d_disc - 1.0) * 12.0, -50.0, 50.0)))
    cup = 0.6 * np.exp(-((d_disc / 0.45) ** 2))[..., None]
    disc_colour = np.array([250, 215, 150], dtype=np.float32)
    cup_colour = np.array([255, 245, 215], dtype=np.float32)
    vessel_inside = np.clip(vein[win] + artery[win], 0, 1)[..., None]
    glow = (0.85 * rim)[..., None] * (1.0 - 0.35 * vessel_inside)
    patch = img[win] * (1.0 - glow) + disc_colour * glow
    img[win] = patch * (1.0 - cup) + cup_colour * cup

    img += rng.standard_normal(img.shape, dtype=np.float32) * 2.5
    img *= fov[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _window(
    centre: tuple[float, float], radius: float, coords: np.ndarray
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Index window around `centre` (image-side units) and its open coordinate grids."""
    size = coords.size
    x0 = max(0, int((centre[0] - radius) * size))
    x1 = min(size, int((centre[0] + radius) * size) + 2)
    y0 = max(0, int((centre[1] - radius) * size))
    y1 = min(size, int((centre[1] + radius) * size) + 2)
    return (slice(y0, y1), slice(x0, x1)), coords[None, x0:x1], coords[y0:y1, None]


def _blurred(arr: np.ndarray, radius: float) -> np.ndarray:
    img = Image.fromarray(arr, "L").filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(img, dtype=np.float32) / 255.0

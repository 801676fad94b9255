"""Write pairs as a DRIVE split folder (``images/``, ``1st_manual/``, ``mask/``), so tests
read them back through the real DRIVE reader."""

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from models.data import FundusPair


def write_drive_split(split: Path, kind: str, pairs: Sequence[FundusPair], first: int) -> None:
    """Pairs numbered from ``first`` under DRIVE's names; ``kind`` is training or test."""
    for sub in ("images", "1st_manual", "mask"):
        (split / sub).mkdir(parents=True, exist_ok=True)
    for number, p in enumerate(pairs, start=first):
        Image.fromarray(p.image).save(split / "images" / f"{number:02d}_{kind}.tif")
        Image.fromarray(p.mask * 255).save(split / "1st_manual" / f"{number:02d}_manual1.gif")
        Image.fromarray(p.fov * 255).save(split / "mask" / f"{number:02d}_{kind}_mask.gif")

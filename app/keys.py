"""Every object-storage key is made here, from ids the server issued; never from user input.

Private objects (checkpoints, training previews, audit evidence) and public dataset
objects live under separate top-level prefixes, and public URLs are only ever made for
keys of published datasets.
"""

from __future__ import annotations

PRIVATE = "private"
PUBLIC = "public"


def checkpoint(pipeline_id: int) -> str:
    return f"{PRIVATE}/pipelines/{pipeline_id}/checkpoint.pt"


def training_grid(pipeline_id: int) -> str:
    return f"{PRIVATE}/pipelines/{pipeline_id}/samples.png"


def dataset_prefix(dataset_id: int) -> str:
    return f"{PUBLIC}/datasets/{dataset_id}/"


def sample_image(dataset_id: int, index: int) -> str:
    return f"{dataset_prefix(dataset_id)}images/{index:05d}.png"


def sample_mask(dataset_id: int, index: int) -> str:
    return f"{dataset_prefix(dataset_id)}masks/{index:05d}.png"


def sample_thumb(dataset_id: int, index: int) -> str:
    return f"{dataset_prefix(dataset_id)}thumbs/{index:05d}.webp"


def archive(dataset_id: int, version: int) -> str:
    return f"{dataset_prefix(dataset_id)}archive-v{version}.zip"


def sha256sums(dataset_id: int) -> str:
    return f"{dataset_prefix(dataset_id)}SHA256SUMS"

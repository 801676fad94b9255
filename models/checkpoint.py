"""Pipeline checkpoints as bytes, so callers can put them in object storage.

A checkpoint is ``torch.save`` of a dict of tensors and plain types only (config dict,
fingerprint, step count, state dicts, optimiser and RNG states, appearance model), loaded
back with ``weights_only=True``: opening one never runs code from the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.appearance import AppearanceModel
from models.config import PipelineConfig
from models.networks import resolve_device
from models.stage1 import build_stage1_discriminator, build_stage1_generator
from models.stage2 import build_stage2_discriminator, build_stage2_generator
from models.train import TrainedPipeline

FORMAT = "synthmed.pipeline"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or is not the one the caller expected."""


def save_pipeline(p: TrainedPipeline) -> bytes:
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": p.config.to_dict(),
        "resolution": p.config.resolution,
        "fingerprint": p.data_fingerprint,
        "steps_done": p.steps_done,
        "losses": {k: float(v) for k, v in p.losses.items()},
        "stage1_generator": _state(p.stage1_generator),
        "stage2_generator": _state(p.stage2_generator),
    }
    if p.stage1_discriminator is not None:
        payload["stage1_discriminator"] = _state(p.stage1_discriminator)
    if p.stage2_discriminator is not None:
        payload["stage2_discriminator"] = _state(p.stage2_discriminator)
    if p.optimizer_states:
        payload["optimizers"] = {k: _to_cpu(v) for k, v in p.optimizer_states.items()}
    if p.appearance is not None:
        payload["appearance"] = p.appearance.to_state()
    if p.rng_states:
        payload["rng"] = {k: v.detach().cpu().clone() for k, v in p.rng_states.items()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def write_pipeline(p: TrainedPipeline, path: Path) -> None:
    """Save ``p`` to a local file, renamed into place: a run killed mid-write leaves the
    previous file (or none), never a truncated one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save_pipeline(p))
    tmp.replace(path)


def load_pipeline(
    data: bytes, *, device: str | torch.device = "cpu", expect_config: PipelineConfig | None = None
) -> TrainedPipeline:
    """Rebuild a pipeline on ``device``; raises CheckpointError for a corrupt or foreign file
    or, with ``expect_config``, for one trained with another config."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign bytes
        raise CheckpointError(f"not a readable pipeline checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a SynthMed pipeline checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint format version {payload.get('version')!r} is not supported "
            f"(this code reads version {VERSION})"
        )
    try:
        config = PipelineConfig.from_dict(payload["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint has an invalid config: {exc}") from exc
    if expect_config is not None and expect_config.to_dict() != config.to_dict():
        raise CheckpointError(
            f"checkpoint was trained with config {config.to_dict()}, "
            f"expected {expect_config.to_dict()}"
        )
    res = config.train_resolution
    dev = resolve_device(device)
    try:
        s1g = _load(
            build_stage1_generator(config.stage1, resolution=res), payload, "stage1_generator"
        )
        s2g = _load(
            build_stage2_generator(config.stage2, resolution=res), payload, "stage2_generator"
        )
        s1d = s2d = None
        if "stage1_discriminator" in payload:
            s1d = _load(
                build_stage1_discriminator(config.stage1, resolution=res),
                payload,
                "stage1_discriminator",
            )
        if "stage2_discriminator" in payload:
            s2d = _load(
                build_stage2_discriminator(config.stage2, resolution=res),
                payload,
                "stage2_discriminator",
            )
        appearance = None
        if "appearance" in payload:
            appearance = AppearanceModel.from_state(payload["appearance"])
        elif config.stage2.appearance:
            raise CheckpointError("checkpoint's config asks for an appearance model it lacks")
        return TrainedPipeline(
            config=config,
            stage1_generator=s1g.to(dev),
            stage2_generator=s2g.to(dev),
            data_fingerprint=str(payload["fingerprint"]),
            steps_done=int(payload["steps_done"]),
            stage1_discriminator=s1d.to(dev) if s1d is not None else None,
            stage2_discriminator=s2d.to(dev) if s2d is not None else None,
            optimizer_states=dict(payload.get("optimizers", {})),
            rng_states=dict(payload.get("rng", {})),
            losses={k: float(v) for k, v in payload.get("losses", {}).items()},
            appearance=appearance,
        )
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint is incomplete or does not match its config: {exc}"
        ) from exc


def _state(net: nn.Module) -> dict[str, Tensor]:
    # Contiguous CPU copies: independent of the device and memory format it trained in.
    return {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _load(net: nn.Module, payload: dict[str, Any], key: str) -> nn.Module:
    if key not in payload:
        raise CheckpointError(f"checkpoint has no {key}")
    net.load_state_dict(payload[key])
    return net

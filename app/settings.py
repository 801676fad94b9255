"""One settings object; every backend is chosen from a URL here and nowhere else."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR = ROOT / "var"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SYNTHMED_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # Embedded defaults: a laptop needs no server at all.
    database_url: str = f"sqlite:///{DEFAULT_VAR / 'synthmed.db'}"
    storage_url: str = f"file://{DEFAULT_VAR / 'objects'}"
    broker_url: str = f"filesystem://{DEFAULT_VAR / 'broker'}"
    storage_access_key: str | None = None
    storage_secret_key: SecretStr | None = None

    # Archive downloads: redirect clients to a short-lived presigned URL of the object store
    # (S3 storage only, reachable by them: see ``public_endpoint`` in the storage URL) so the
    # bytes skip this process, instead of streaming them through it.
    download_redirect: bool = False

    site_url: str = "http://127.0.0.1:8000"
    # Public API rate limit per client address (requests per minute); 0 disables it.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    device: str = "auto"
    # torch.compile the generation networks (see models.generate.generate): seconds of
    # compilation per job, repaid by jobs of thousands of samples.
    compile: bool = False
    # pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth), a local
    # file: when set, dataset evaluation adds Inception-FID/KID. Never downloaded.
    inception_weights: Path | None = None

    @property
    def storage_secret(self) -> str | None:
        return self.storage_secret_key.get_secret_value() if self.storage_secret_key else None


@lru_cache
def get_settings() -> Settings:
    return Settings()

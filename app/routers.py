"""Every router of the web app, in one list."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    # Routers are added here as their domains land.
    pass

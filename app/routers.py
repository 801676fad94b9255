"""Every router of the web app, in one list."""

from __future__ import annotations

from fastapi import FastAPI

from app.datasets.endpoints import router as datasets_router
from app.pages.routes import router as pages_router


def include_routers(app: FastAPI) -> None:
    app.include_router(datasets_router)
    app.include_router(pages_router)

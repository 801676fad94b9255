"""The web application: engine, storage and task sender are built in the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from app.db import make_engine
from app.deps import SessionDep
from app.errors import install_error_handler
from app.jobs.queue import task_sessions
from app.microcache import MicroCacheMiddleware, ResponseCache
from app.pages.static import static_files
from app.ratelimit import install_rate_limit
from app.routers import include_routers
from app.settings import Settings, get_settings
from app.storage import storage_from_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = task_sessions(engine, settings.broker_url)
        app.state.storage = storage_from_settings(settings)
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise walk it all and stall every request.
        gc.collect()
        gc.freeze()
        yield
        engine.dispose()

    app = FastAPI(
        title="SynthMed",
        version="0.1.0",
        summary="Synthetic retinal fundus datasets, published with evidence.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handler(app)
    # The micro-cache sits inside the rate limiter, so cached answers are limited too.
    app.state.response_cache = ResponseCache()
    app.add_middleware(MicroCacheMiddleware, cache=app.state.response_cache)
    install_rate_limit(app, settings.rate_limit_per_minute)

    @app.get("/healthz", tags=["health"])
    def healthz(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok"}

    include_routers(app)
    app.mount("/static", static_files(), name="static")
    return app

"""The error tree and the one handler that renders it as JSON {"detail": ...}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class SynthMedError(Exception):
    status_code = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(SynthMedError):
    status_code = 400


class NotFound(SynthMedError):
    status_code = 404


class Conflict(SynthMedError):
    status_code = 409


class InvalidTransition(Conflict):
    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"cannot move a {old} dataset to {new}")


class RangeNotSatisfiable(SynthMedError):
    status_code = 416


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(SynthMedError)
    def _render(_request: Request, exc: SynthMedError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

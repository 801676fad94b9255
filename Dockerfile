# One image for the web process, the workers and the migration step.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/synthmed
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY models models
COPY workers workers
COPY migrations migrations
COPY templates templates
COPY static static
RUN pip install --upgrade pip && pip install .
RUN useradd --system --uid 10001 synthmed
USER synthmed
EXPOSE 8000
CMD ["synthmed", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

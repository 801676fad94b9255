"""Print the paper's evaluation table beside ours, from the stored metrics.

    python bench/paper_table.py                      # the latest evaluated pipeline
    python bench/paper_table.py --pipeline 3         # a given pipeline's metrics
    python bench/paper_table.py --dataset SLUG       # a dataset's metrics
    python bench/paper_table.py --metrics m.json     # a JSON list of {name, value, details}

Metrics are read from the database named by SYNTHMED_DATABASE_URL (`synthmed evaluate`
stores a pipeline's, the evaluation job a dataset's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from models.evaluate.table import format_table


def stored_metrics(*, pipeline: int | None, dataset: str | None) -> list[dict[str, Any]]:
    from app.db import make_engine, make_sessionmaker
    from app.settings import get_settings
    from app.tables import Dataset, Metric

    sessions = make_sessionmaker(make_engine(get_settings().database_url))
    with sessions() as session:
        query = select(Metric).where(Metric.private.is_(False))
        if dataset is not None:
            query = query.join(Dataset, Metric.dataset_id == Dataset.id).where(
                Dataset.slug == dataset
            )
        else:
            if pipeline is None:
                pipeline = session.scalar(
                    select(Metric.pipeline_id)
                    .where(Metric.pipeline_id.is_not(None))
                    .order_by(Metric.id.desc())
                )
            query = query.where(Metric.pipeline_id == pipeline)
        return [
            {"name": m.name, "value": m.value, "details": m.details} for m in session.scalars(query)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--metrics", type=Path, help="JSON list of metric rows")
    source.add_argument("--pipeline", type=int, help="a pipeline id")
    source.add_argument("--dataset", help="a dataset slug")
    args = parser.parse_args(argv)
    if args.metrics is not None:
        metrics = json.loads(args.metrics.read_text())
        if not isinstance(metrics, list):
            parser.error("--metrics must hold a JSON list of {name, value, details}")
    else:
        metrics = stored_metrics(pipeline=args.pipeline, dataset=args.dataset)
        if not metrics:
            parser.error("no stored metrics found: run `synthmed evaluate` first")
    sys.stdout.write(format_table(metrics) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

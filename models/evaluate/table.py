"""The paper's evaluation table beside ours, as plain text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (label, paper value, our metric name). The paper reports single numbers, no spread.
PAPER_ROWS: tuple[tuple[str, float, str], ...] = (
    ("F1, U-Net trained on real", 0.8988, "tstr_f1_real"),
    ("F1, U-Net trained on synthetic", 0.8877, "tstr_f1_synthetic"),
    ("KL divergence, real vs synthetic", 4.759, "kl_real_syn"),
    ("KL divergence, real vs real", 4.2e-4, "kl_real_real"),
)
# Ours only: shown below the paper's rows when present.
EXTRA_ROWS: tuple[tuple[str, str], ...] = (
    ("F1, U-Net trained on real + synthetic", "tstr_f1_mixed"),
    ("F1, second human observer", "tstr_f1_second_observer"),
    ("AUC, trained on real", "tstr_auc_real"),
    ("AUC, trained on synthetic", "tstr_auc_synthetic"),
    ("AUC, trained on real + synthetic", "tstr_auc_mixed"),
    ("KL divergence, synthetic vs real", "kl_syn_real"),
    ("seg-FID, synthetic vs real test", "seg_fid"),
    ("seg-KID, synthetic vs real test", "seg_kid"),
    ("Inception-FID, synthetic vs real test", "inception_fid"),
    ("Inception-KID, synthetic vs real test", "inception_kid"),
    ("memorisation audit passed (1 = yes)", "memorisation_passed"),
)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.3g}"
    return f"{value:.4f}"


def _ours(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not measured"
    text = _fmt(row.get("value"))
    std = (row.get("details") or {}).get("std")
    if isinstance(std, int | float) and row.get("value") is not None:
        text += f" ± {_fmt(float(std))}"
    return text


def text_columns(rows: Sequence[Sequence[str]], align: str, *, rule: bool = False) -> list[str]:
    """Rows of cells as lines of aligned columns: `align` has one "<" (left) or ">" (right)
    per column; `rule` underlines the first row, the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(align))]
    lines = [
        "  ".join(
            cell.ljust(w) if a == "<" else cell.rjust(w)
            for cell, w, a in zip(r, widths, align, strict=True)
        ).rstrip()
        for r in rows
    ]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(metrics: list[dict[str, Any]]) -> str:
    """A plain-text table: the paper's figures and ours (mean ± std over seeds where given)."""
    by_name = {m["name"]: m for m in metrics}
    header = ("", "paper", "ours")
    rows = [(label, _fmt(paper), _ours(by_name.get(name))) for label, paper, name in PAPER_ROWS]
    rows += [(label, "", _ours(by_name[name])) for label, name in EXTRA_ROWS if name in by_name]
    return "\n".join(text_columns([header, *rows], "<>>", rule=True))

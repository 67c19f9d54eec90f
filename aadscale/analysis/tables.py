"""Tables 1-5 of the paper from per-image records: summaries, Markdown and CSV rows."""
from __future__ import annotations

from typing import Iterable

from aadscale.errors import InputError

SPLITS = ("fooled", "resisting")


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Percentages of each split, rounded to 0.1 so that they sum to exactly 100."""
    total = sum(counts.values())
    if total == 0:
        raise InputError("no images to share out")
    first = round(100.0 * counts[SPLITS[0]] / total, 1)
    return {SPLITS[0]: first, SPLITS[1]: round(100.0 - first, 1)}


def _split(records: list[dict]) -> dict[str, list[dict]]:
    return {s: [r for r in records if r["fooled"] == (s == "fooled")] for s in SPLITS}


def summarize(records: list[dict], top_ns: Iterable[int], lime_features: Iterable[int] = (),
              iou_threshold: float = 0.5) -> dict:
    """The five tables as nested dicts (means are None for an empty split)."""
    if not records:
        raise InputError("no analysed images: nothing to summarise")
    by = _split(records)
    cells = records[0]["cells"]
    split_shares = shares({k: len(v) for k, v in by.items()})
    table1 = {s: {"share": split_shares[s], "n": len(by[s]),
                  "mean_iou": _mean(r["box_iou"] for r in by[s])} for s in SPLITS}
    low = {s: [r for r in by[s] if r["box_iou"] is not None and r["box_iou"] < iou_threshold]
           for s in SPLITS}
    n_low = sum(len(v) for v in low.values())
    low_shares = shares({k: len(v) for k, v in low.items()}) if n_low else dict.fromkeys(SPLITS)
    table2 = {"threshold": iou_threshold, "n": n_low,
              **{s: {"share": low_shares[s], "n": len(low[s]),
                     "mean_confidence": _mean(r["confidence"] for r in low[s])} for s in SPLITS}}
    table3 = {str(n): {"cells": min(n, cells), **{s: _mean(r[f"top{n}_iou"] for r in by[s]) for s in SPLITS}}
              for n in top_ns}
    out = {"n": len(records), "map_cells": cells, "table1": table1, "table2": table2, "table3": table3}
    if lime_features:
        out["table4"] = {str(k): {s: _mean(r[f"lime{k}_box_iou"] for r in by[s]) for s in SPLITS}
                         for k in lime_features}
        out["table5"] = {str(k): {s: _mean(r[f"lime{k}_adv_iou"] for r in by[s]) for s in SPLITS}
                         for k in lime_features}
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def to_markdown(summary: dict) -> str:
    """The tables in the paper's layout, with counts."""
    t1, t2, t3 = summary["table1"], summary["table2"], summary["table3"]
    lines = [f"Images analysed: {summary['n']} (fooled = the attack changed the prediction).", "",
             "## Table 1: attention-vs-box IoU (area-matched threshold)", "",
             "| split | share (%) | n | mean IoU |", "|---|---|---|---|"]
    lines += [f"| {s} | {t1[s]['share']:.1f} | {t1[s]['n']} | {_f(t1[s]['mean_iou'])} |" for s in SPLITS]
    lines += ["", f"## Table 2: images with IoU < {t2['threshold']:g} ({t2['n']} images)", "",
              "| split | share (%) | n | mean top-1 confidence |", "|---|---|---|---|"]
    lines += [f"| {s} | {_f(t2[s]['share'], 1)} | {t2[s]['n']} | {_f(t2[s]['mean_confidence'], 4)} |"
              for s in SPLITS]
    cells = summary["map_cells"]
    lines += ["", f"## Table 3: top-n cell IoU, clean vs adversarial maps ({cells} cells per map)", "",
              "| n | fooled | resisting |", "|---|---|---|"]
    for n, row in t3.items():
        label = n if row["cells"] == int(n) else f"{n} (capped at {row['cells']})"
        lines.append(f"| {label} | {_f(row['fooled'])} | {_f(row['resisting'])} |")
    for key, title in (("table4", "Table 4: LIME top-k superpixels vs box IoU"),
                       ("table5", "Table 5: LIME top-k superpixels, clean vs adversarial IoU")):
        if key in summary:
            lines += ["", f"## {title}", "", "| features | fooled | resisting |", "|---|---|---|"]
            lines += [f"| {k} | {_f(r['fooled'])} | {_f(r['resisting'])} |" for k, r in summary[key].items()]
    return "\n".join(lines) + "\n"


def to_rows(summary: dict) -> list[dict]:
    """Long-format rows ``table, row, split, metric, value`` for CSV."""
    rows = []
    for s in SPLITS:
        for metric in ("share", "n", "mean_iou"):
            rows.append({"table": 1, "row": "", "split": s, "metric": metric, "value": summary["table1"][s][metric]})
        for metric in ("share", "n", "mean_confidence"):
            rows.append({"table": 2, "row": f"iou<{summary['table2']['threshold']:g}", "split": s,
                         "metric": metric, "value": summary["table2"][s][metric]})
    for table, metric in ((3, "top_n_iou"), (4, "lime_box_iou"), (5, "lime_adv_iou")):
        for key, row in summary.get(f"table{table}", {}).items():
            rows += [{"table": table, "row": key, "split": s, "metric": metric, "value": row[s]} for s in SPLITS]
    return rows

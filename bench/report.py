"""Summaries of the runs: the console table, the JSON file, the chart and docs/benchmarks.md."""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path
from typing import Any

SUBJECT, REFERENCE = "certmq", "mosquitto"
BEGIN_MARKER = "<!-- benchmark-results:begin -->"
END_MARKER = "<!-- benchmark-results:end -->"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(
    runs: list[dict[str, Any]],
    cells: list[str],
    brokers: list[str],
    subject: str = SUBJECT,
    reference: str = REFERENCE,
) -> list[dict[str, Any]]:
    """Per cell and broker: medians over the repeats; subject/reference ratios (certmq/mosquitto
    unless told otherwise) when both ran."""
    summary = []
    for cell in cells:
        entry: dict[str, Any] = {"cell": cell, "brokers": {}}
        for broker in brokers:
            mine = [r for r in runs if r["cell"] == cell and r["broker"] == broker and "discarded" not in r]
            good = [r for r in mine if "error" not in r]
            entry["brokers"][broker] = {
                "deliveries_per_s": _median([r["deliveries_per_s"] for r in good]),
                "cpu_us_per_message": _median(
                    [r["cpu_us_per_message"] for r in good if r["cpu_us_per_message"]]
                ),
                "broker_busy": _median([r["broker_busy"] for r in good]),
                "other_cpu_share": _median([r["other_cpu_share"] for r in good]),
                "runs": len(good),
                "incomplete": sum(1 for r in good if not r["complete"]),
                "errors": [r["error"] for r in mine if "error" in r],
            }
            companions = {name for r in good for name in r.get("companion_cpu_us_per_message", {})}
            if companions:
                entry["brokers"][broker]["companion_cpu_us_per_message"] = {
                    name: _median(
                        [
                            r["companion_cpu_us_per_message"][name]
                            for r in good
                            if r.get("companion_cpu_us_per_message", {}).get(name) is not None
                        ]
                    )
                    for name in sorted(companions)
                }
        if subject in brokers and reference in brokers:
            mine, theirs = entry["brokers"][subject], entry["brokers"][reference]
            for name, key in (("throughput", "deliveries_per_s"), ("cpu", "cpu_us_per_message")):
                paired = _paired_ratios(runs, cell, key, subject, reference)
                # The median of the ratios of runs made back to back: a burst of load from
                # elsewhere on the machine tends to hit both runs of a pair alike.
                entry[f"{name}_ratio"] = _median(paired)
                entry[f"{name}_ratio_range"] = [min(paired), max(paired)] if paired else None
                entry[f"{name}_ratio_of_medians"] = _ratio(mine[key], theirs[key])
        summary.append(entry)
    return summary


def _paired_ratios(
    runs: list[dict[str, Any]], cell: str, key: str, subject: str = SUBJECT, reference: str = REFERENCE
) -> list[float]:
    """subject/reference ratio for each repeat (each repeat ran both brokers back to back)."""
    by_repeat: dict[int, dict[str, float]] = {}
    for run in runs:
        if run["cell"] == cell and "error" not in run and "discarded" not in run and run.get(key):
            by_repeat.setdefault(run["repeat"], {})[run["broker"]] = run[key]
    return [
        pair[subject] / pair[reference]
        for pair in by_repeat.values()
        if subject in pair and reference in pair
    ]


# ---- formatting ----


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _micro(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _flag(broker_summary: dict[str, Any]) -> str:
    if broker_summary["errors"] and not broker_summary["runs"]:
        return " (failed)"
    if broker_summary["incomplete"] or broker_summary["errors"]:
        return " *"
    return ""


def rows(summary: list[dict[str, Any]], brokers: list[str]) -> tuple[list[str], list[list[str]]]:
    both = SUBJECT in brokers and REFERENCE in brokers
    header = ["cell"] + [f"{b} msg/s" for b in brokers]
    if both:
        header.append("ratio")
    header += [f"{b} CPU us/msg" for b in brokers]
    if both:
        header.append("ratio")
    header += [f"{b} busy" for b in brokers]
    table = []
    for entry in summary:
        row = [entry["cell"]]
        row += [_rate(entry["brokers"][b]["deliveries_per_s"]) + _flag(entry["brokers"][b]) for b in brokers]
        if both:
            row.append(_times(entry["throughput_ratio"]))
        row += [_micro(entry["brokers"][b]["cpu_us_per_message"]) for b in brokers]
        if both:
            row.append(_times(entry["cpu_ratio"]))
        row += [_percent(entry["brokers"][b]["broker_busy"]) for b in brokers]
        table.append(row)
    return header, table


def console_table(summary: list[dict[str, Any]], brokers: list[str]) -> str:
    header, table = rows(summary, brokers)
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [header, *table]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summary: list[dict[str, Any]], brokers: list[str]) -> str:
    header, table = rows(summary, brokers)
    both = SUBJECT in brokers and REFERENCE in brokers
    if both:
        # Show the spread of the paired ratios next to their median.
        for entry, row in zip(summary, table, strict=True):
            for key, column in (
                ("throughput_ratio_range", 1 + len(brokers)),
                ("cpu_ratio_range", 2 + 2 * len(brokers)),
            ):
                spread = entry.get(key)
                if spread and len(spread) == 2 and spread[0] != spread[1]:
                    row[column] += f" ({spread[0]:.2f}-{spread[1]:.2f})"
    header = [h.replace("us/msg", "µs/msg").replace("ratio", f"{SUBJECT} / {REFERENCE}") for h in header]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


# ---- files ----


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_chart(path: Path, summary: list[dict[str, Any]], brokers: list[str], title: str) -> bool:
    """A PNG: absolute throughput per cell, and the certmq/mosquitto ratios when both ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return False
    cells = [entry["cell"] for entry in summary]
    both = SUBJECT in brokers and REFERENCE in brokers
    figure, axes = plt.subplots(1, 2 if both else 1, figsize=(14 if both else 8, 5.5), squeeze=False)
    positions = range(len(cells))
    width = 0.8 / len(brokers)
    left = axes[0][0]
    for index, broker in enumerate(brokers):
        values = [entry["brokers"][broker]["deliveries_per_s"] or 0 for entry in summary]
        left.bar(
            [p + (index - (len(brokers) - 1) / 2) * width for p in positions], values, width, label=broker
        )
    left.set_yscale("log")
    left.set_ylabel("deliveries per second (median, log scale)")
    left.set_xticks(list(positions), cells, rotation=35, ha="right")
    left.set_title("End-to-end throughput")
    left.legend()
    if both:
        right = axes[0][1]
        throughput = [entry["throughput_ratio"] or 0 for entry in summary]
        cpu = [entry["cpu_ratio"] or 0 for entry in summary]
        right.bar([p - 0.2 for p in positions], throughput, 0.4, label="throughput ratio (higher is better)")
        right.bar([p + 0.2 for p in positions], cpu, 0.4, label="CPU per message ratio (lower is better)")
        right.axhline(1.0, color="black", linewidth=0.8)
        right.set_ylabel(f"{SUBJECT} / {REFERENCE}")
        right.set_xticks(list(positions), cells, rotation=35, ha="right")
        right.set_title(f"{SUBJECT} relative to {REFERENCE}, same run")
        right.legend()
    figure.suptitle(textwrap.fill(title, 150 if both else 90), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


DOCS_TEMPLATE = f"""# Benchmarks

## Method

(Describe the method here.)

## Results

{BEGIN_MARKER}
{END_MARKER}
"""


def update_docs(
    path: Path,
    block: str,
    *,
    begin: str = BEGIN_MARKER,
    end: str = END_MARKER,
    heading: str = "## Results",
) -> None:
    """Replace what lies between the markers in path; everything else is written by hand.
    Other benchmarks keep their results in the same page between markers of their own."""
    text = path.read_text() if path.exists() else DOCS_TEMPLATE
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{begin}\n{end}\n"
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{begin}\n{block.strip()}\n{end}{after}")

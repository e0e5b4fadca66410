"""An evaluation result (`fusion_training.evaluate`) as the tables fusion-eval prints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_value", "print_tables", "table_rows"]


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the tables to print."""
    tables = [
        (
            f"fusion metrics ({results['meta']['preset']}, mean over "
            f"{results['meta']['images']} images)",
            ["metric", "value"],
            [[name, format_value(value)] for name, value in results["fusion"].items()],
        )
    ]
    detection = results.get("detection")
    if detection:
        if "AP50" in detection:
            header = ["class", "AP50"]
            rows = [[n, format_value(v)] for n, v in detection["per_class"].items()]
            rows.append(["all", format_value(detection["AP50"])])
        else:
            header = ["class", "AP50", "AP50:95"]
            rows = [
                [n, format_value(v), format_value(detection["per_class_50_95"][n])]
                for n, v in detection["per_class"].items()
            ]
            rows.append(
                ["all", format_value(detection["mAP50"]), format_value(detection["mAP50_95"])]
            )
        tables.append(("detection", header, rows))
    return tables


def print_tables(results: Mapping[str, Any]) -> None:
    """Tables with rich when it is installed, aligned plain text otherwise."""
    tables = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for title, header, rows in tables:
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            print(title)
            for row in [header, *rows]:
                cells = [row[0].ljust(widths[0])]
                cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
                print("  " + "  ".join(cells))
        return
    console = Console()
    for title, header, rows in tables:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)

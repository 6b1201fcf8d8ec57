"""A lab experiment's record on disk: what `convlens lab` writes and the report reads back.

One folder per experiment holds ``result.json`` (the experiment's name, the data it ran on,
the result's numbers and the tables a face shows) and ``plot.png`` (its figure). Both are
written atomically, so a report never reads half a record; ``lab all`` adds ``index.json`` and
``index.md`` above the folders. The lab owns this format; what the tables and the figure look
like is decided by ``convlens.views.lab``, which builds a ``LabRecord`` from a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from convlens.errors import ConvlensError

RESULT_FILE = "result.json"
PLOT_FILE = "plot.png"


@dataclass
class LabRecord:
    """One experiment's outcome as saved: numbers, the tables shown, and the plot as PNG bytes."""

    experiment: str
    data: str  # the data set's spec or name
    result: dict  # the result's ``to_json()``; "seconds" is how long it ran
    tables: list[dict]  # {"title", "columns", "rows"}: what the CLI prints and the report shows
    plot: bytes | None = None  # PNG

    @property
    def seconds(self) -> float:
        value = self.result.get("seconds", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    def to_json(self) -> dict:
        """``result.json``'s content (and `convlens lab --json`'s output)."""
        return {"experiment": self.experiment, "data": self.data, **self.result, "tables": self.tables}


def save_record(record: LabRecord, folder: str | Path) -> dict[str, Path]:
    """Write ``record`` into ``folder`` (atomically); returns {"result": path, "plot": path or absent}."""
    from convlens.storage import atomic_write

    folder = Path(folder)
    written = {"result": folder / RESULT_FILE}
    atomic_write(written["result"], (json.dumps(record.to_json(), indent=2) + "\n").encode())
    if record.plot is not None:
        written["plot"] = folder / PLOT_FILE
        atomic_write(written["plot"], record.plot, durable=False)  # as every PNG convlens writes
    else:  # a plot from an earlier run would sit beside numbers it does not show
        (folder / PLOT_FILE).unlink(missing_ok=True)
    return written


def has_record(folder: str | Path) -> bool:
    return (Path(folder) / RESULT_FILE).is_file()


def load_record(folder: str | Path) -> LabRecord:
    """The record saved in ``folder``; a missing or malformed ``result.json`` is one error naming it."""
    path = Path(folder) / RESULT_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvlensError(f"{path}: no lab result here (write one with `convlens lab`)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConvlensError(f"{path}: not a lab result ({exc})") from None
    if not isinstance(value, dict) or not isinstance(value.get("experiment"), str):
        raise ConvlensError(f"{path}: not a lab result (expected an object with an 'experiment' name)")
    tables = value.pop("tables", [])
    if not isinstance(tables, list) or not all(_is_table(t) for t in tables):
        raise ConvlensError(f"{path}: not a lab result ('tables' must be a list of tables)")
    experiment, data = value.pop("experiment"), str(value.pop("data", ""))
    plot = Path(folder) / PLOT_FILE
    return LabRecord(experiment, data, value, tables, plot.read_bytes() if plot.is_file() else None)


def _is_table(table) -> bool:
    return (
        isinstance(table, dict)
        and isinstance(table.get("title"), str)
        and isinstance(table.get("rows"), list)
    )


def save_index(folder: str | Path, data: str, seconds: float, records: list[LabRecord]) -> dict[str, Path]:
    """``index.json`` and ``index.md`` of `lab all`: each experiment's time, result and plot, by path
    relative to ``folder`` (each record lies in ``folder/NAME``)."""
    from convlens.storage import atomic_write

    folder = Path(folder)
    entries = [
        {
            "experiment": r.experiment,
            "seconds": r.seconds,
            "result": f"{r.experiment}/{RESULT_FILE}",
            "plot": f"{r.experiment}/{PLOT_FILE}",
        }
        for r in records
    ]
    index = {"data": data, "seconds": seconds, "experiments": entries}
    lines = [f"# convlens lab on {data}", "", f"All experiments took {seconds:.1f} s.", ""]
    lines += [
        f"- **{e['experiment']}** ({e['seconds']:.1f} s): [result]({e['result']}) · ![plot]({e['plot']})"
        for e in entries
    ]
    written = {"json": folder / "index.json", "markdown": folder / "index.md"}
    atomic_write(written["json"], (json.dumps(index, indent=2) + "\n").encode())
    atomic_write(written["markdown"], ("\n".join(lines) + "\n").encode())
    return written

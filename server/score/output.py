"""The scorer's output: finished chunks are written as Parquet parts in
`<output>.partial/` (each atomically), so an interrupted run resumes without scoring a
row twice or losing one; the output file is assembled from the parts under a temporary
name and renamed only when every row is in."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from server.atomic import atomic_write_bytes, atomic_writer

FORMATS = (".parquet", ".csv", ".jsonl")
META = "meta.json"


class OutputError(ValueError):
    """An output path that cannot be used."""


@dataclass
class Totals:
    rows: int = 0
    failed: int = 0
    mutual_information: float = 0.0  # sums over scored rows
    vote_disagreement: float = 0.0

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.failed += table.num_rows - table.column("error").null_count
        for name in ("mutual_information", "vote_disagreement"):
            total = pc.sum(table.column(name)).as_py() or 0.0
            setattr(self, name, getattr(self, name) + total)


class Output:
    def __init__(self, path: Path, overwrite: bool, resume: bool) -> None:
        if path.suffix not in FORMATS:
            raise OutputError(f"--output {path}: unknown format; expected .parquet, .csv or .jsonl")
        if path.exists() and not overwrite:
            raise OutputError(f"--output {path} exists: pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise OutputError(f"--output {path}: no such folder {path.parent}")
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        if self.partial.exists() and not (resume or overwrite):
            raise OutputError(
                f"{self.partial} holds an interrupted run: pass --resume to continue it "
                "or --overwrite to start over"
            )
        self.resume = resume

    def start(self, fingerprint: dict[str, Any]) -> set[int]:
        """Prepare the parts folder; the chunk indexes already done (when resuming)."""
        meta = self.partial / META
        if self.partial.exists() and self.resume and meta.is_file():
            saved = json.loads(meta.read_text())
            changed = [
                k
                for k in sorted(set(saved) | set(fingerprint))
                if saved.get(k) != fingerprint.get(k)
            ]
            if changed:
                raise OutputError(
                    f"--resume: {self.partial} was made with other settings or input "
                    f"({', '.join(changed)}); use --overwrite to start over"
                )
            return {int(p.stem.removeprefix("part-")) for p in self.partial.glob("part-*.parquet")}
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir()
        atomic_write_bytes(meta, json.dumps(fingerprint, indent=1).encode())
        return set()

    def write_part(self, index: int, table: pa.Table) -> None:
        with atomic_writer(self.partial / f"part-{index:06d}.parquet") as handle:
            pq.write_table(table, handle)

    def parts(self) -> list[Path]:
        return sorted(self.partial.glob("part-*.parquet"))

    def finish(self, parts: list[Path], classes: list[str], cycles: list[int]) -> Totals:
        """Assemble the parts, in order, into the output file (atomically) and remove them."""
        totals = Totals()
        with atomic_writer(self.path) as handle:
            writer: Any = None
            for part in parts:
                table = pq.read_table(part)
                totals.add(table)
                if self.path.suffix == ".parquet":
                    if writer is None:
                        writer = pq.ParquetWriter(handle, table.schema)
                    writer.write_table(table)
                elif self.path.suffix == ".csv":
                    flat = flatten_for_csv(table, classes, cycles)
                    if writer is None:
                        writer = pacsv.CSVWriter(handle, flat.schema)
                    writer.write_table(flat)
                else:
                    for row in table.to_pylist():
                        handle.write(json.dumps(row).encode() + b"\n")
            if writer is not None:
                writer.close()
        shutil.rmtree(self.partial)
        return totals


def flatten_for_csv(table: pa.Table, classes: list[str], cycles: list[int]) -> pa.Table:
    """CSV holds no lists: probabilities become p_<class> columns, member labels member_<cycle>."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "probabilities":
            for i, cls in enumerate(classes):
                columns[f"p_{cls}"] = pc.list_element(column, i)
        elif name == "member_labels":
            for i, cycle in enumerate(cycles):
                columns[f"member_{cycle}"] = pc.list_element(column, i)
        else:
            columns[name] = column
    return pa.table(columns)

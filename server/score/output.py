"""The scorer's output: finished chunks are written as Parquet parts in
`<output>.partial/` (each atomically), so an interrupted run resumes without scoring a
row twice or losing one; the output file is assembled from the parts under a temporary
name and renamed only when every row is in.

Finishing is crash-safe at every step (`Output.finish`):

1. the parts are merged, in order, into a temporary file beside the output (fsynced);
2. `<output>.finished` is written (atomically): the merged file's sha256 and size, the
   run's totals and its settings fingerprint;
3. the merged file is renamed to the output;
4. `<output>.partial/` is removed, then `<output>.finished`.

Killed before 3, the parts are all there and `--resume` assembles them again (the output
is absent, or still the old one an `--overwrite` run replaces). Killed after 3, the
marker vouches for the output (same sha256) and `--resume` only finishes step 4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from snapens.atomic import (
    TEMP_PREFIX,
    atomic_write_bytes,
    atomic_writer,
    fsync_dir,
    new_file_mode,
    sha256_file,
)
from snapens.validation import changed_settings

FORMATS = (".parquet", ".csv", ".jsonl")
META = "meta.json"
FINISHED_SUFFIX = ".finished"


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
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.marker = path.with_name(path.name + FINISHED_SUFFIX)
        self.resume = resume
        self.fingerprint: dict[str, Any] = {}
        record = self._finished_record()
        # A finished run whose cleanup was cut short: --resume completes it.
        self.finished = record if resume else None
        if path.exists() and not overwrite and self.finished is None:
            hint = (
                " (the run that wrote it was stopped while cleaning up: pass --resume to finish it)"
                if record is not None
                else ""
            )
            raise OutputError(f"--output {path} exists: pass --overwrite to replace it{hint}")
        if not path.parent.is_dir():
            raise OutputError(f"--output {path}: no such folder {path.parent}")
        if self.partial.exists() and not (resume or overwrite):
            raise OutputError(
                f"{self.partial} holds an interrupted run: pass --resume to continue it "
                "or --overwrite to start over"
            )

    def finish_cleanup(self, fingerprint: dict[str, Any]) -> Totals:
        """--resume of a run killed after its output was in place (during step 4): check it
        is the same run, remove what is left of it and return the run's totals."""
        if self.finished is None:
            raise OutputError(f"{self.path}: no finished run to clean up")
        _check_fingerprint(self.finished["fingerprint"], fingerprint, self.path)
        self._remove_stale_temporaries()
        self._clean_up()
        return Totals(**self.finished["totals"])

    def start(self, fingerprint: dict[str, Any]) -> set[int]:
        """Prepare the parts folder; the chunk indexes already done (when resuming)."""
        self.fingerprint = fingerprint
        self._remove_stale_temporaries()
        meta = self.partial / META
        if self.partial.exists() and self.resume and meta.is_file():
            _check_fingerprint(json.loads(meta.read_text()), fingerprint, self.partial)
            return {int(p.stem.removeprefix("part-")) for p in self.partial.glob("part-*.parquet")}
        # An earlier run's marker must not vouch for this run's output.
        self.marker.unlink(missing_ok=True)
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
        """Assemble the parts, in order, into the output file and remove them, in the four
        crash-safe steps the module's docstring lists."""
        totals = Totals()
        fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{self.path.name}.", dir=self.path.parent)
        merged = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(fd, new_file_mode())  # mkstemp creates 0600
                _assemble(handle, self.path.suffix, parts, classes, cycles, totals)
                handle.flush()
                os.fsync(handle.fileno())
            record = {
                "sha256": sha256_file(merged),
                "bytes": merged.stat().st_size,
                "totals": asdict(totals),
                "fingerprint": self.fingerprint,
            }
            atomic_write_bytes(self.marker, json.dumps(record, indent=1).encode())
            os.replace(merged, self.path)
        except BaseException:
            merged.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
        self._clean_up()
        return totals

    def _finished_record(self) -> dict[str, Any] | None:
        """The marker's record, when the output on disk is the file it describes."""
        try:
            record = json.loads(self.marker.read_bytes())
            if not isinstance(record, dict) or not self.path.is_file():
                return None
            if self.path.stat().st_size != record["bytes"]:
                return None
            if sha256_file(self.path) != record["sha256"]:
                return None
            Totals(**record["totals"])
            dict(record["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record

    def _clean_up(self) -> None:
        """Step 4: the parts folder, then the marker (which keeps vouching until the end)."""
        if self.partial.exists():
            shutil.rmtree(self.partial)
            fsync_dir(self.path.parent)
        self.marker.unlink(missing_ok=True)
        fsync_dir(self.path.parent)

    def _remove_stale_temporaries(self) -> None:
        """Temporaries of this output (merged file, marker) left by a killed run."""
        names = re.escape(TEMP_PREFIX + self.path.name) + f"({re.escape(FINISHED_SUFFIX)})?"
        stale = re.compile(names + r"\.[a-z0-9_]+")
        for leftover in self.path.parent.glob(TEMP_PREFIX + "*"):
            if stale.fullmatch(leftover.name) and leftover.is_file():
                leftover.unlink(missing_ok=True)


def _check_fingerprint(saved: dict[str, Any], fingerprint: dict[str, Any], what: Path) -> None:
    changed = changed_settings(saved, fingerprint)
    if changed:
        raise OutputError(
            f"--resume: {what} was made with other settings or input "
            f"({', '.join(changed)}); use --overwrite to start over"
        )


def _assemble(
    handle: Any,
    suffix: str,
    parts: list[Path],
    classes: list[str],
    cycles: list[int],
    totals: Totals,
) -> None:
    writer: Any = None
    for part in parts:
        table = pq.read_table(part)
        totals.add(table)
        if suffix == ".parquet":
            if writer is None:
                writer = pq.ParquetWriter(handle, table.schema)
            writer.write_table(table)
        elif suffix == ".csv":
            flat = flatten_for_csv(table, classes, cycles)
            if writer is None:
                writer = pacsv.CSVWriter(handle, flat.schema)
            writer.write_table(flat)
        else:
            for row in table.to_pylist():
                handle.write(json.dumps(row).encode() + b"\n")
    if writer is not None:
        writer.close()


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

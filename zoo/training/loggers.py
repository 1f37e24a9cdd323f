"""``metrics.csv`` that survives interruptions: appended, flushed as it goes, cut back on resume.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts and buffers rows in
memory, so a resumed run lost the history of its earlier pieces and a killed run the rows since
the last flush. This one keeps the file, writes every logged row at once and, when a run resumes
from a checkpoint taken at global step ``G``, drops the rows logged at step ``G`` or later (the
work after the checkpoint, which the resumed run does again), so the file ends up as an
uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from zoo.io import atomic_write_text


class _KeepingWriter(ExperimentWriter):
    """Lightning's writer without the deletion of an existing file; its header is kept."""

    def _check_log_dir_exists(self) -> None:
        header, _ = read_metrics(Path(self.metrics_file_path))
        self.metrics_keys = sorted(header)


def read_metrics(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and complete rows of a metrics CSV (a torn last line from a kill is dropped)."""
    if not path.is_file():
        return [], []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    rows = [r for r in reader if None not in r and None not in r.values()]
    return list(reader.fieldnames or []), rows


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``save_dir/metrics.csv``, kept across resumed pieces."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def truncate_from_step(self, step: int) -> None:
        """Drop the rows logged at ``step`` or later (called when resuming at that step)."""
        path = Path(self.log_dir) / "metrics.csv"
        header, rows = read_metrics(path)
        if not header:
            return
        kept = [r for r in rows if r.get("step") not in (None, "") and int(r["step"]) < step]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(path, out.getvalue())

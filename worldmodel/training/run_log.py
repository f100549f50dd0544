"""What a training run logs in its folder ``RUN``: ``tb/`` (TensorBoard) and ``metrics.jsonl``.

``metrics.jsonl`` holds the scalars of ``tb/``, one JSON line per step that logged any: a log
step's line also holds that step's held-out scores; a resume first drops the lines a killed run
logged after its checkpoint (``trim_metrics``), so every step appears once.

What goes to ``tb/`` (one TensorBoard run per run folder; tests/test_tensorboard.py lists the tags):

- every ``log_every`` steps: ``loss`` and ``grad_norm`` (``loss/<key>``, ``grad_norm/<key>`` for
  several optimisers), ``lr`` (``lr/<key>``), ``frames_per_s`` (the time spent on held-out
  scores and samples not counted) and the model's ``metrics/<name>``;
- every ``sample_every`` steps and at the last: ``samples/grid`` (an image) and ``samples/video``
  (an animated GIF, TensorBoard's video format);
- every ``eval_every`` steps and at the last, given held-out data: the ``eval/*`` and
  ``control/*`` scores of ``worldmodel.training.held_out``;
- once, when a fresh run starts: the model config (``model.<field>``), the train config
  (``train.<field>``, resolved batch size, learning rate, amp and device) and the data
  fingerprint as TensorBoard hparams, with the loss and the held-out tags as its metrics, so the
  HParams tab shows each run's latest (final) values. They are written into ``tb/`` itself (not
  a timestamped subfolder as ``SummaryWriter.add_hparams`` makes), so a resumed run, which does
  not write them again, stays one row.

A resumed writer purges the events a killed run logged after its checkpoint (``purge_step``); a
fresh one purges whatever an earlier attempt left in ``tb/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worldmodel.files import write_text_atomic


def open_writer(out_dir: Path, step: int):
    """A ``SummaryWriter`` on ``out_dir/tb`` for a run at ``step`` (0: a fresh run)."""
    from torch.utils.tensorboard import SummaryWriter

    # TensorBoard drops the events of earlier files at and after purge_step. A resumed run
    # continues after its checkpoint's step, so what a killed run logged past it goes (the
    # checkpoint's own step stays: it is not logged again); a fresh run drops everything
    # an earlier attempt left, its hparams included.
    purge = step + 1 if step else 0
    tb = out_dir / "tb"
    if not step:  # a fresh run: an earlier attempt's curves are obsolete
        # (purge_step alone is not enough here: TensorBoard applies it in file-name order,
        # and the writers' counters sort as text, "…10" before "…9")
        for old in tb.glob("events.out.tfevents.*"):
            old.unlink()
    return SummaryWriter(str(tb), purge_step=purge)


def write_scalars(writer, out_dir: Path, step: int, scalars: Mapping[str, float]) -> None:
    """One step's scalars to TensorBoard and as one line of ``out_dir/metrics.jsonl``."""
    for name, value in scalars.items():
        writer.add_scalar(name, value, step)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")


def trim_metrics(out_dir: Path, step: int) -> None:
    """Rewrite ``out_dir/metrics.jsonl`` (atomically) without the lines past ``step`` and any torn
    last line, which a run killed after its last checkpoint leaves; the resumed run logs them anew."""
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    kept = []
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if line.endswith("\n") and isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(line)
    if "".join(kept) != text:
        write_text_atomic(path, "".join(kept), fsync=True)


def write_hparams(writer, values: Mapping[str, Any], metrics: Iterable[str]) -> None:
    """``values`` (``None`` ones left out) as hparams in the writer's folder itself, at step 0,
    with ``metrics`` as the tags the HParams tab shows; flushed."""
    from torch.utils.tensorboard.summary import hparams

    plain = {k: hparam_value(v) for k, v in values.items() if v is not None}
    # The HParams tab reads each metric's latest scalar of this run: the values here are unused.
    file_writer = writer._get_file_writer()
    for summary in hparams(plain, dict.fromkeys(metrics, 0.0)):
        file_writer.add_summary(summary, 0)
    writer.flush()  # on disk now: a run killed soon after is resumed without rewriting them


def hparam_value(value: Any) -> int | float | str:
    """A config value as TensorBoard hparams take it: numbers and text as they are, booleans as
    ``true``/``false``, sequences as ``--set`` writes them (``0.5,0.999``), anything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(hparam_value(v)) for v in value)
    return str(value)

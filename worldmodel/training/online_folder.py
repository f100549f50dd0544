"""The online run's folder ``OUT``: its settings, its growing dataset and its stage markers.

::

    OUT/settings.json            the settings; a resume must agree (but for iterations, device)
    OUT/data/                    the growing dataset: the initial shards hard-linked (copied across
                                 file systems; the initial folder is never written), then one
                                 shard per iteration; each online shard's manifest entry has an
                                 ``online`` record (iteration, env seeds, model step, success)
    OUT/model/                   the Trainer's run folder (checkpoints/last.pt, tb/, metrics.jsonl)
    OUT/iterations/iter-NNNN-train.json, iter-NNNN-eval.json   stage markers, written atomically
    OUT/online.json, OUT/online.html    the rows so far and the success-vs-real-steps chart

``RunFolder`` sets the folder up (or checks a run already in it) and reads and writes the markers
and this run's manifest entries; the stages that fill it are ``worldmodel.training.online_stages``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldmodel import files
from worldmodel.data import shards as sh
from worldmodel.errors import DataError
from worldmodel.training.online_config import FREE_ON_RESUME, OnlineConfig
from worldmodel.training.online_report import read_ppo_run

Log = Callable[[str], None]


class RunFolder:
    """One run folder: its dataset, model and markers (module docstring)."""

    def __init__(self, cfg: OnlineConfig, log: Log | None, progress: bool) -> None:
        self.cfg, self.log, self.progress = cfg, log or (lambda _: None), progress
        self.out = cfg.out
        self.data = self.out / "data"
        self.model_dir = self.out / "model"
        self.ckpt = self.model_dir / "checkpoints" / "last.pt"
        self.marks = self.out / "iterations"

    # --- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the settings against a run already in ``OUT`` (or the inputs of a new one), then
        make sure ``OUT/data`` exists."""
        cfg = self.cfg
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out}: --out exists and is not a folder")
        path = self.out / "settings.json"
        mine = json.loads(json.dumps(cfg.settings()))  # as the file holds them (tuples as lists)
        if cfg.ppo_run is not None:
            read_ppo_run(cfg.ppo_run, cfg.task)  # a bad --ppo-run fails now, not after the loop
        if path.is_file():
            saved = {**_field_defaults(cfg), **json.loads(path.read_text())}  # older runs lack newer fields
            diff = [k for k in mine if k not in FREE_ON_RESUME and saved.get(k) != mine[k]]
            if diff:
                what = ", ".join(f"{k}: {saved.get(k)!r} vs {mine[k]!r}" for k in diff)
                raise ValueError(
                    f"{path}: this run was started with other settings ({what}); use another --out or "
                    "the same settings to resume"
                )
            run = saved["run"]
        else:
            if self.out.is_dir() and any(self.out.iterdir()):
                raise ValueError(
                    f"{self.out}: folder is not empty and holds no online run; choose a new --out"
                )
            source = sh.load_manifest(cfg.data)
            if not source["complete"]:
                raise DataError(
                    f"{cfg.data / sh.MANIFEST}: collection is unfinished; finish it with `worldmodel collect`"
                )
            self._check_sim(source)
            self.image_size, self.seq_len = int(source["image_size"]), int(source["seq_len"])
            if cfg.checkpoint is not None:  # the model's fit to the data, before anything is written
                from worldmodel.dynamics.checkpoint import model_from, read

                self._check_model(
                    model_from(read(cfg.checkpoint), cfg.checkpoint, device="cpu"), cfg.checkpoint
                )
            # The run's id tags its shards, so a dataset that already holds another run's online
            # episodes (an OUT/data given as --data) is told apart from this run's.
            run = {"id": secrets.token_hex(8), "initial_episodes": int(source["episodes"])}
            self.out.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(path, {**mine, "run": run}, fsync=True)
        self.run_id, self.initial_episodes = run["id"], int(run["initial_episodes"])
        self._link_data()
        self.manifest = sh.load_manifest(self.data)
        self.seq_len = int(self.manifest["seq_len"])
        self.image_size = int(self.manifest["image_size"])
        env = self.manifest.get("env") or {}
        self.num_objects = cfg.num_objects if cfg.num_objects is not None else env.get("num_objects")

    def _link_data(self) -> None:
        """``OUT/data``: the initial dataset's manifest and hard links to its shards (copies across
        file systems), made under a temporary name and renamed whole."""
        for stale in self.out.glob(".data.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (self.data / sh.MANIFEST).is_file():
            for stale in self.data.glob("*.tmp-*"):  # a killed append's shard: never listed
                stale.unlink(missing_ok=True)
            return
        src = self.cfg.data
        manifest = sh.load_manifest(src)
        tmp = self.out / f".data.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            for entry in manifest["shards"]:
                source, target = src / entry["file"], tmp / entry["file"]
                try:
                    os.link(source, target)
                except OSError:  # another file system (or no hard links): a checked copy
                    shutil.copyfile(source, target)
                    if sh.file_sha256(target) != entry["sha256"]:
                        raise DataError(f"{source}: its sha256 differs from the manifest's") from None
                if target.stat().st_size != entry["bytes"]:
                    raise DataError(
                        f"{source}: {target.stat().st_size} bytes, the manifest says {entry['bytes']}"
                    )
            sh.write_json_atomic(tmp / sh.MANIFEST, manifest)
            os.replace(tmp, self.data)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_sim(self, manifest: dict[str, Any]) -> None:
        """The loop acts in a default-configured sim: refuse data collected with other physics,
        camera or action scale (the task's own fields may differ)."""
        from worldmodel.envs.push_table_config import PushTableConfig

        sim = manifest.get("sim") or {}
        here = dataclasses.asdict(PushTableConfig(image_size=int(manifest["image_size"])))
        skip = {"task", "num_objects", "goal_conditioned", "recorded_k", "reach_weight", "push_offset"}
        skip.add("image_size")

        def norm(v: Any) -> Any:
            return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

        diff = [k for k in sim if k in here and k not in skip and norm(sim[k]) != norm(here[k])]
        if diff:
            raise ValueError(
                f"{self.cfg.data / sh.MANIFEST}: collected with other sim settings "
                f"({', '.join(diff)}) than the default PushTable the loop acts in"
            )

    # --- markers -----------------------------------------------------------------------------
    def _mark(self, i: int, stage: str) -> Path:
        return self.marks / f"iter-{i:04d}-{stage}.json"

    def _read_mark(self, i: int, stage: str) -> dict[str, Any] | None:
        path = self._mark(i, stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_mark(self, i: int, stage: str, value: dict[str, Any]) -> None:
        files.write_json_atomic(self._mark(i, stage), value, fsync=True)

    def _online_entries(self) -> dict[int, dict[str, Any]]:
        """This run's shards by iteration (the manifest re-read)."""
        self.manifest = sh.load_manifest(self.data)
        mine = [e for e in self.manifest["shards"] if (e.get("online") or {}).get("run") == self.run_id]
        return {int(e["online"]["iteration"]): e for e in mine}

    def _online_entry(self, i: int) -> dict[str, Any] | None:
        return self._online_entries().get(i)

    def _check_model(self, model: Any, where: Any) -> None:
        c = model.config
        if getattr(model, "state_head", None) is None:
            raise ValueError(
                f"{where}: the loop plans on the model's own state head, and this model has none: train it "
                "with --set state_head=true (a separate head file would go stale as the model is fine-tuned)"
            )
        if c.image_size != self.image_size:
            raise ValueError(
                f"{where}: the model takes {c.image_size}-px frames, the dataset holds "
                f"{self.image_size}-px ones"
            )
        if c.seq_len > self.seq_len:
            raise ValueError(
                f"{where}: the model trains on windows of {c.seq_len} frames, the dataset's episodes have "
                f"{self.seq_len}"
            )


def _field_defaults(cfg: Any) -> dict[str, Any]:
    """The config's field defaults as a settings file holds them (what a run started before a field
    existed ran with)."""
    fields = dataclasses.fields(cfg)
    values = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return json.loads(json.dumps(values, default=str))

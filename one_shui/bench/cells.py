"""The bench's cells, each one `one-shui fit` and/or `test` run in this process through the same
LightningCLI as the command line, its record written as ``cell.json`` at the end.

A cell's folder is the run layout's (:func:`one_shui.layout.run_dir`) under ``<out>/cells``, its run
named by the cell and a hash of everything that decides its result (its arguments, the content of every
config it reads, the split fingerprint, and so its upstream cells' folders, and the data's content): a
cell whose ``cell.json`` exists is reused, and a changed config or corrected data runs in a new folder.
The cells are shared by the benches of one ``out``: a pretrain, or a method run, that two benches have
in common runs once, under the cell's lock. An interrupted fit resumes from its ``last.ckpt``; a
finished cell whose record or checkpoint is damaged runs again.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .. import layout
from ..atomic import held, write_bytes_atomic, write_text_atomic
from ..checkpoints import CheckpointError, load_checkpoint
from ..cli import OneShuiCLI
from ..cli import run as run_one_shui
from ..data.config import data_parser
from ..data.datamodule import TEST_POOLS, IdentityDataModule
from ..data.splits import Split, shadow_half
from ..errors import MissingFileError
from ..methods.loading import config_method
from ..metrics.rmia import RMIAResult, rmia
from ..metrics.tow import UTILITY_POOLS
from ..quiet import quiet
from . import curves
from .config import ORIGINAL, Bench, split_arguments
from .relearning import Relearning, relearn
from .report import reference_of
from .tracking import Tracker

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
RECORD, LOCK = "cell.json", ".lock"
# What a record holds: a cell of another format (2: people by their dataset names) is run again.
RECORD_FORMAT = 2
RECORD_KEY = {  # a record's own result
    "stage": "checkpoint", "row": "metrics", "reference": "probabilities", "shadow": "probabilities"
}  # fmt: skip
UNLEARNING_STRIDE = 1000  # between the seeds of a method's cells at consecutive unlearning seeds
SHADOW_STRIDE = 100_000  # between the training seeds of a seed's pretrain and its shadows (training_seed)
# Warnings that every cell would repeat, none of them about the user's settings (beyond those of every
# run, one_shui.quiet.EXPECTED).
SILENCED = (
    "LightningCLI's args parameter is intended to run from",  # the bench builds the CLI's arguments
    ".*does not have many workers",  # the synthetic data needs none
    "There is a wandb run already in progress",  # the cell's own run, on purpose
    "The dirpath has changed from",  # a request of the sequential bench tested from the preparation of k = 1
)


@dataclass(frozen=True)
class Cell:
    """One step of the bench: a ``stage`` (pretrain or retrain), a table ``row`` on the pretrained model,
    the ``reference`` of a row for RMIA (the same method applied to the retrained model), or a ``shadow``
    model of the per-person attack (trained on its half of the people, then tested)."""

    seed: int
    kind: str  # "stage", "row", "reference" or "shadow"
    label: str  # the stage ("pretrain", "retrain") or the row's label
    config: str
    args: tuple[str, ...] = ()  # the method's own `one-shui` arguments
    setting: str | None = None  # the setting's values of the method's options, stacked after config
    request: int | None = None  # the request k (1 to requests) it is at; None: the pretrain, before any
    requests: int = 1  # K, the requests of the bench
    unlearning: int = 0  # the unlearning seed u of a method's cell (0 to unlearning_seeds - 1)
    shadow: int | None = None  # which shadow model (0 to shadows - 1) a shadow cell trains

    @property
    def name(self) -> str:
        suffix = " (reference)" if self.kind == "reference" else ""
        at = f", request {self.request}" if self.request and self.requests > 1 else ""
        again = f", unlearning seed {self.unlearning}" if self.unlearning else ""
        return f"{self.label}{suffix}, seed {self.seed}{again}{at}"

    @property
    def tag(self) -> str:
        """The label, marked ``@retrain`` for a reference, ``@u<u>`` at an unlearning seed above 0 and
        ``@k<request>`` at a request of a bench of several: its W&B run's name and, as a file name, its
        folder's. (Unlearning seed 0 is the cell of a bench with one: benches share it.)"""
        tag = f"{self.label}@retrain" if self.kind == "reference" else self.label
        tag = f"{tag}@u{self.unlearning}" if self.unlearning else tag
        return f"{tag}@k{self.request}" if self.request and self.requests > 1 else tag

    @property
    def wandb_run(self) -> dict:
        """The name, job type and config of the cell's W&B run."""
        config = {
            "seed": self.seed,
            "cell": self.label,
            "kind": self.kind,
            "config": self.config,
            "setting": self.setting,
            "request": self.request,
            "unlearning_seed": self.unlearning,
            "shadow": self.shadow,
        }
        job_type = self.label if self.kind == "stage" else self.kind  # pretrain, retrain or the kind
        return {
            "name": f"{self.tag}/seed{self.seed}",
            "job_type": job_type,
            "config": {**config, "args": list(self.args)},
        }

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-.@" else "_" for c in self.tag)


def plan(bench: Bench) -> list[Cell]:
    """Every cell of the bench, in the order they run: per seed, the pretrain, then per request k its
    retrain, the Pretrain and Retrain rows and, at each unlearning seed, every method's row (each after the
    method's row at k - 1) with, where the bench has RMIA references (:attr:`Bench.references`), the
    method's reference; then the seed's shadow models, if any."""
    cells = []
    kinds = ("row", "reference") if bench.references else ("row",)
    for seed in bench.seeds:
        cells.append(Cell(seed, "stage", layout.PRETRAIN, bench.train, requests=bench.requests))
        for k in range(1, bench.requests + 1):
            at = {"request": k, "requests": bench.requests}
            cells.append(Cell(seed, "stage", layout.RETRAIN, bench.train, **at))
            cells += [Cell(seed, "row", label, bench.evaluate, **at) for label in ORIGINAL]
            cells += [
                Cell(
                    seed,
                    kind,
                    method.label,
                    method.config,
                    tuple(method.arguments),
                    method.setting,
                    **at,
                    unlearning=u,
                )
                for method in bench.methods
                for u in range(bench.unlearning_seeds)
                for kind in kinds
            ]
        cells += [Cell(seed, "shadow", f"shadow {k}", bench.train, shadow=k) for k in range(bench.shadows)]
    return cells


def unlearning_seed(cell: Cell) -> int:
    """The seed of a cell's randomness: its training seed, and for a method's cell at unlearning seed
    u > 0 the training seed plus :data:`UNLEARNING_STRIDE` x u (the same split, pretrain and retrain;
    the method's own draws anew)."""
    return cell.seed + UNLEARNING_STRIDE * cell.unlearning


def training_seed(cell: Cell) -> int:
    """The seed of a cell's run (``seed_everything``): a shadow's, the training seed plus
    :data:`SHADOW_STRIDE` x (its number + 1), so that the shadows' training noise differs as the
    pretrain's does from each of theirs; any other cell's :func:`unlearning_seed`."""
    if cell.shadow is not None:
        return cell.seed + SHADOW_STRIDE * (cell.shadow + 1)
    return unlearning_seed(cell)


def retrain_on(pretrain: Path) -> list[str]:
    """The data arguments of a retrain: the retain pool of its pretrain's split."""
    return [
        "--data.init_args.train_pool=retain",
        f"--data.init_args.split_file={pretrain.with_name(layout.SPLIT)}",
    ]


def shadow_on(pretrain: Path, shadow: int) -> list[str]:
    """The data arguments of a shadow model: its pool (the retain people and its half of the forget and
    TEST people) of its pretrain's split."""
    return [
        "--data.init_args.train_pool=shadow",
        f"--data.init_args.shadow={shadow}",
        f"--data.init_args.split_file={pretrain.with_name(layout.SPLIT)}",
    ]


def ran_on(cli: OneShuiCLI) -> dict[str, str]:
    """The device and precision a cell's run used, for the bench's environment."""
    return {"device": str(cli.trainer.strategy.root_device), "precision": str(cli.trainer.precision)}


def run_cli(subcommand: str, args: list[str]) -> tuple[OneShuiCLI, float]:
    """`one-shui <subcommand> <args>` in this process, every path given (no layout defaults): the CLI
    and its wall time in seconds."""
    start = time.perf_counter()
    with silenced():
        cli = run_one_shui([subcommand, *args], layout_defaults=False)
    return cli, time.perf_counter() - start


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """The warnings that every cell would repeat (:data:`SILENCED` and those of every run) left out,
    within the block."""
    with quiet(), warnings.catch_warnings():
        for message in SILENCED:
            warnings.filterwarnings("ignore", message=message)
        yield


def digest(args: list[str], configs: list[str], split: str | None, data: str) -> str:
    """SHA-256 of the record format, the arguments, the content of every config file they read, the split
    fingerprint and the data's content fingerprint."""
    contents = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in configs}
    key = [RECORD_FORMAT, args, contents, split, data]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def bench_data(bench: Bench) -> IdentityDataModule:
    """The bench's data: its config with the bench's ``--data.*`` arguments, every image's bytes hashed
    again (``rehash``: the cells are keyed on its content, so no cached hint is trusted alone)."""
    _, runs, _ = split_arguments(bench.args)
    overrides = [arg for arg in runs if arg.startswith("--data.")]
    parser = data_parser()
    args = ["--config", bench.data, *overrides, "--data.init_args.rehash=true"]
    return parser.instantiate(parser.parse_args(args)).data


def say(line: str) -> None:
    """A line for the user, above the bench's progress bar (on stderr, where the bar is)."""
    tqdm.write(line, file=sys.stderr)


def reusable(cell: Cell, folder: Path) -> dict | None:
    """The record of a cell that is done and whole; None when it must run: never done, or its record or
    its checkpoint (of a pretrain or retrain, or the unlearned model of a request the next one is served
    on) damaged or missing, which is said in a line and cleared so that the cell runs again from the
    start."""
    done = folder / RECORD
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text())
        if not isinstance(record, dict):
            raise TypeError(f"{done} holds a JSON {type(record).__name__}, not a record")
        missing = [key for key in ("split", "seconds", RECORD_KEY[cell.kind]) if key not in record]
        if missing:
            raise ValueError(f"{done} has no {', '.join(missing)}")
        if cell.kind == "stage":
            load_checkpoint(record["checkpoint"], mmap=True)
        if record.get("unlearned"):  # what the next request of the sequential bench is served on
            load_checkpoint(record["unlearned"], mmap=True)
        return record
    except (ValueError, KeyError, TypeError, CheckpointError, MissingFileError) as err:
        say(f"{cell.name}: its finished run in {folder} is damaged ({err}); running it again")
        shutil.rmtree(layout.checkpoint_dir(folder), ignore_errors=True)
        done.unlink()
        return None


class Runner:
    """Runs (or reuses) the cells of a bench; keeps the records of the stages it needs downstream."""

    def __init__(self, bench: Bench, tracker: Tracker):
        self.bench, self.tracker = bench, tracker
        self.data = bench_data(bench)
        # the data read and audited once
        self.dataset, self.content = self.data.name, self.data.content_fingerprint
        # the records by (seed, kind, label, request, unlearning seed)
        self.records: dict[tuple[int, str, str, int | None, int], dict] = {}

    def record(
        self, seed: int, kind: str, label: str, request: int | None = None, unlearning: int = 0
    ) -> dict:
        return self.records[(seed, kind, label, request, unlearning)]

    def at(self, request: int) -> dict[tuple[int, str, str, int], dict]:
        """The records of the cells at ``request`` and of the pretrains before it, by (seed, kind, label,
        unlearning seed)."""
        return {
            (seed, kind, label, u): record
            for (seed, kind, label, k, u), record in self.records.items()
            if k in (None, request)
        }

    def run(self, cell: Cell) -> dict:
        """The cell's record: read from its folder when it is done and whole, else made by running it,
        under the cell's lock (a second bench on the same cell waits for it, then reuses it)."""
        args, configs, original = self._arguments(cell)
        first = cell.label == layout.PRETRAIN  # every other cell depends on the split it makes
        split = None if first else self.record(cell.seed, "stage", layout.PRETRAIN)["split"]
        served_curve = (
            self.bench.curve and cell.kind == "row" and curves.has_curve(config_method(cell.config))
        )
        curve = [f"curve={self.bench.curve}"] if served_curve else []
        relearns = self.bench.relearning if cell.kind == "row" else []
        # a shadow's test reads the evaluate config with the bench's evaluation arguments (_shadow)
        tested_by = [self.bench.evaluate, *self.bench.evaluation_arguments] if cell.kind == "shadow" else []
        key = digest([*args, *tested_by, *curve, *relearns], configs, split, self.content)
        name, cells = f"{cell.slug}-{key[:12]}", Path(self.bench.out) / "cells"
        folder = layout.run_dir(self.dataset, self.bench.split_size, cell.seed, name, cells)
        with held(folder / LOCK, busy=lambda: say(f"{cell.name}: another bench runs it; waiting")):
            record = reusable(cell, folder)
            if record is None:
                record = self._execute(cell, [*args, f"--trainer.default_root_dir={folder}"], folder)
                record.update(
                    key=key,
                    seed=cell.seed,
                    unlearning_seed=cell.unlearning,
                    kind=cell.kind,
                    label=cell.label,
                    original=original,
                )
                write_text_atomic(folder / RECORD, json.dumps(record))
        self.records[(cell.seed, cell.kind, cell.label, cell.request, cell.unlearning)] = record
        return record

    def make_stand_in(self, pretrain: Cell) -> None:
        """Build the ``pretrain`` cell's model without training it: a stand-in backbone its recipe names
        is made (once for every run, with its own progress) before the cells' progress starts, whose first
        estimate would otherwise count those minutes in the first cell and read hours."""
        with silenced():
            run_one_shui(self._arguments(pretrain)[0], run=False, layout_defaults=False)

    def attacks(self) -> dict[tuple[str, int], RMIAResult]:
        """RMIA on every row of a bench with references (one request), keyed by (label, seed, unlearning
        seed), against its reference (see report.reference_of)."""
        records = self.at(1)
        return {
            (label, seed, u): rmia(
                record["probabilities"],
                reference_of(records, seed, label, u)["probabilities"],
                offline_a=self.bench.rmia_offline_a,
            )
            for (seed, kind, label, u), record in records.items()
            if kind == "row"
        }

    def _execute(self, cell: Cell, args: list[str], folder: Path) -> dict:
        """Run the cell in its W&B run: its record, less the keys that name it."""
        with self.tracker.cell(folder, **cell.wandb_run) as logger:
            if cell.kind == "shadow":
                record = self._shadow(cell, args, folder, logger)
            elif cell.kind == "stage":
                record = self._stage([*args, *logger], folder)
            else:
                record = self._row(cell, [*args, *logger], folder)
            self.tracker.summarise(record)
        gc.collect()
        return record

    def _arguments(self, cell: Cell) -> tuple[list[str], list[str], str | None]:
        """The cell's `one-shui` arguments (without its folder), the configs they read, and the stage
        whose model the cell starts from."""
        bench, seed, k = self.bench, cell.seed, cell.request
        args, configs = self._common(cell)
        if cell.kind in ("stage", "shadow"):  # a run of the train recipe
            args += bench.train_arguments
        if cell.label == layout.PRETRAIN:
            return args, configs, None
        pretrain = self.record(seed, "stage", layout.PRETRAIN)["checkpoint"]
        if cell.kind == "stage":
            return [*args, *retrain_on(Path(pretrain))], configs, None
        if cell.kind == "shadow":  # its test (_shadow) reads the evaluate config too
            return [*args, *shadow_on(Path(pretrain), cell.shadow)], [*configs, bench.evaluate], None
        retrain = self.record(seed, "stage", layout.RETRAIN, k)["checkpoint"]
        original = layout.RETRAIN if cell.kind == "reference" or cell.label == "Retrain" else layout.PRETRAIN
        args += [
            f"--model.init_args.pretrain_ckpt={retrain if original == layout.RETRAIN else pretrain}",
            # ToW is the report's, against the Retrain row (report.tow): no row runs the retrained model again
            "--model.init_args.retrain_ckpt=null",
            *(["--model.init_args.reference=true"] if cell.kind == "reference" else []),
            *bench.evaluation_arguments,
        ]
        if cell.label in ORIGINAL:
            return args, configs, original
        args += [*bench.method_args, *cell.args]
        if k > 1:  # served on what the request before wrote
            before = self.record(seed, "row", cell.label, k - 1, cell.unlearning)
            args.append(f"--model.init_args.serve_on={before['unlearned']}")
        return args, configs, original

    def _common(self, cell: Cell) -> tuple[list[str], list[str]]:
        """The `one-shui` arguments of every cell (configs, seed, the data's request) and the configs read."""
        bench = self.bench
        configs = [*bench.trainer, bench.data, cell.config, *([cell.setting] if cell.setting else [])]
        args = [arg for path in configs for arg in ("--config", path)] + QUIET
        args += [f"--seed_everything={training_seed(cell)}", f"--data.init_args.seed={cell.seed}"]
        if cell.unlearning:  # MetaUnlearn's simulated requests drawn anew too
            args.append(f"--data.init_args.simulation_seed={unlearning_seed(cell)}")
        args.append(f"--data.init_args.request_size={bench.split_size}")
        if bench.requests > 1:
            args.append(f"--data.init_args.requests={bench.requests}")
            if cell.request:
                args.append(f"--data.init_args.request={cell.request}")
        return [*args, *bench.args], configs

    def _stage(self, args: list[str], folder: Path) -> dict:
        cli, seconds = run_cli("fit", [*args, "--ckpt_path=last"])
        checkpoints = layout.checkpoint_dir(folder)
        split = Split.load(checkpoints / layout.SPLIT)
        return {
            "checkpoint": str(checkpoints / layout.BEST),
            "split": split.fingerprint,
            "seconds": {"fit": seconds},
            **ran_on(cli),
        }

    def _shadow(self, cell: Cell, args: list[str], folder: Path, logger: list[str]) -> dict:
        """Train a shadow model as the pretrain is trained, on its pool (``args``), then test it as an RMIA
        reference is tested (the probabilities of the forget, TEST and VAL samples): its record, with the
        people of :func:`one_shui.data.splits.shadow_pool` it trained on."""
        bench, root = self.bench, [f"--trainer.default_root_dir={folder}", *logger]
        record = self._stage([*args, *logger], folder)
        args, _ = self._common(replace(cell, config=bench.evaluate))
        test = [
            *args,
            f"--model.init_args.pretrain_ckpt={record['checkpoint']}",
            "--model.init_args.retrain_ckpt=null",
            "--model.init_args.reference=true",
            *bench.evaluation_arguments,
            *root,
            "--verbose=false",
        ]
        cli, seconds = run_cli("test", test)
        split = Split.load(Path(record["checkpoint"]).with_name(layout.SPLIT))
        return {
            **record,
            **reference_record(cli.model, {**record["seconds"], "test": seconds}),
            "people": sorted(shadow_half(split, cell.shadow)),
        }

    def _row(self, cell: Cell, args: list[str], folder: Path) -> dict:
        seconds: dict[str, float] = {}
        prepared = self._prepare(cell, args, folder, seconds)
        resume = [f"--ckpt_path={prepared}"] if prepared else []
        cli, seconds["test"] = run_cli("test", [*args, *resume, "--verbose=false"])
        record = (
            row_record(cli.model, seconds) if cell.kind == "row" else reference_record(cli.model, seconds)
        )
        loaders = dict(zip(TEST_POOLS, cli.trainer.test_dataloaders, strict=True))
        if self.bench.curve and cell.kind == "row" and curves.has_curve(type(cli.model)):
            start = time.perf_counter()
            as_it_was = self.record(cell.seed, "row", "Pretrain", cell.request)["metrics"]
            with silenced():
                record["curve"] = curves.serve(
                    cli.model, loaders, self.bench.curve, as_it_was, unlearning_seed(cell)
                )
            seconds["curve"] = time.perf_counter() - start
        if self.bench.relearn_steps and cell.kind == "row":
            start, bench, model = time.perf_counter(), self.bench, cli.model
            how = Relearning(
                bench.relearn_steps,
                bench.relearn_lr or model.model.hparams.lr,
                bench.relearn_sample or len(model.trainer.datamodule.rows["support"]),
            )
            with silenced():
                record["relearn"] = relearn(model, loaders, how, unlearning_seed(cell))
            seconds["relearn"] = time.perf_counter() - start
        if cell.label not in ORIGINAL and cell.request < self.bench.requests:
            record["unlearned"] = str(self._keep_unlearned(cell, cli.model, folder))
        return {**record, "prepared": str(prepared) if prepared else None, **ran_on(cli)}

    @staticmethod
    def _keep_unlearned(cell: Cell, method, folder: Path) -> Path:
        """The unlearned model that the next request is served on, written in the cell's folder."""
        unlearned = layout.checkpoint_dir(folder) / layout.UNLEARNED
        buffer = io.BytesIO()
        torch.save(method.unlearned_checkpoint({"unlearned": {"request": cell.request}}), buffer)
        write_bytes_atomic(unlearned, buffer.getvalue())
        return unlearned

    def _prepare(self, cell: Cell, args: list[str], folder: Path, seconds: dict[str, float]) -> Path | None:
        """The prepared method's checkpoint, fitted in the cell's folder at the first request (it serves
        every later one: a method is prepared once, on the original model); None for a method with nothing
        to prepare."""
        if config_method(cell.config).train_pool is None:
            return None
        if cell.request > 1:
            prepared = self.record(cell.seed, cell.kind, cell.label, 1, cell.unlearning)["prepared"]
            return Path(prepared) if prepared else None
        _, seconds["fit"] = run_cli("fit", [*args, "--ckpt_path=last"])
        return layout.checkpoint_dir(folder) / layout.LAST


def reference_record(method, seconds: dict[str, float]) -> dict:
    """What an RMIA reference's test gives (see ``UnlearningMethod``'s ``reference``): what every test
    gives (:func:`tested`) and RMIA's probabilities."""
    probabilities = {role: p.tolist() for role, p in method.results["probabilities"].items()}
    return {**tested(method, seconds), "probabilities": probabilities}


def tested(method, seconds: dict[str, float]) -> dict:
    """What every test gives: the method, what it read, the split and the phases' times (``forget``'s
    added to ``seconds``)."""
    seconds["forget"] = method.results["forget_seconds"]
    return {"method": method.class_path(), "reads": method.results["reads"],
            "split": method.split.fingerprint, "seconds": seconds}  # fmt: skip


def row_record(method, seconds: dict[str, float]) -> dict:
    """What a row's test gives: its metrics (the check set's scores before and after forget among
    them), the per-identity forget metric, the MIA's curve and RMIA's probabilities."""
    results, metric, evaluation = method.results, method.evaluation.metric, method.evaluation
    prefix = f"forget/{metric}/"
    return {
        **tested(method, seconds),
        "mia_selection": results["mia_selection"],
        "metric": metric,
        "metrics": {
            **{pool: results[f"{pool}/{metric}"] for pool in UTILITY_POOLS},
            **{key: results[key] for key in ("tow", "mia_auc", "mia_forget_non_member") if key in results},
            "request": results.get(f"request/{metric}"),  # the forget utility of the request served
            "check_before": results.get("check/before"),  # the guard's figures
            "check_after": results.get("check/after"),
        },
        "identities": {k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix)},
        "mia_roc": {"fpr": evaluation.mia.fpr.tolist(), "tpr": evaluation.mia.tpr.tolist()},
        "probabilities": {pool: p.tolist() for pool, p in evaluation.probabilities.items()},
    }

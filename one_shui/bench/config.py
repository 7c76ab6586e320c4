"""The bench config: the setting (its data config, its training recipe, the request size and the
seeds), then the methods, each by its YAML (``configs/methods/<method>.yaml``, which names its class)
with the setting's own values for it as arguments. Parsed and checked by jsonargparse, so every key can
be set on the command line too (``--seeds [0]``)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from .. import layout
from ..atomic import writable_folder
from ..errors import UserError
from ..methods.base import UnlearningMethod
from ..methods.loading import config_method, method_options, setting_options

ONE_SHUI_ARGUMENTS = ("--data.", "--trainer.", "--model.")  # passed through to the `one-shui` runs
ORIGINAL = ("Pretrain", "Retrain")  # the rows of the models as trained, tested by the bench's evaluate config


class BenchConfigError(UserError, ValueError):
    """A bench config that cannot run: a missing file, a YAML that names no method, a repeated label."""


@dataclass(frozen=True)
class Method:
    """A row of the table.

    Args:
        config: the method's YAML (``configs/methods/<method>.yaml``), run by `one-shui fit/test`; its
            ``model.class_path`` names the method.
        label: the row's name in the table and the plots (default: the method's class name).
        setting: the setting's values of the method's options, a YAML of ``model.init_args`` alone
            (``configs/settings/<setting>/<method>.yaml``), stacked after ``config`` in the method's runs;
            the file a `one-shui` command gives after the method's config to run it as the bench does.
        options: the setting's own values of the method's options (its ``model.init_args``), e.g.
            ``{meta_lr: 0.3}``: checked against the method's signature when the bench is read, then
            given to its runs after the bench's ``args``.
        args: other `one-shui` arguments added to this method's runs, after its ``options``, e.g.
            ``--trainer.max_epochs=10``.
    """

    config: str
    label: str | None = None
    setting: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    @property
    def arguments(self) -> list[str]:
        """The method's `one-shui` arguments: its options, then its other ``args``."""
        return [*model_arguments(self.options), *self.args]


@dataclass(frozen=True)
class Wandb:
    """One W&B run per cell, grouped by the bench's name, and a summary run with the table and plots.

    Args:
        project: the W&B project.
        entity: the W&B team or user (default: yours).
        mode: ``online``, ``offline`` (``wandb sync`` later) or ``disabled``; by default online when
            W&B has an API key (``wandb login`` or WANDB_API_KEY), else offline, unless WANDB_MODE says.
    """

    project: str = "one_shui"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None


@dataclass(frozen=True)
class Bench:
    """A benchmark: every method on every seed, after that seed's pretrain and retrain.

    Args:
        name: the bench's name: its folder under ``out`` and its W&B group.
        data: the dataset's config (``configs/data/...``), under every run.
        train: the training recipe (``configs/train/...``) of the pretrain and, on D_r only, the retrain.
        methods: the methods' rows, 1-SHUI and full-data alike (the table sorts them by what they read).
        evaluate: the config that tests a model as it is (NoUnlearning): the Pretrain and Retrain rows.
        request_size: N, the number of people in the forget request (in each, with ``requests``).
        requests: K; above 1, the sequential bench: K requests of N people each, served one after another,
            each on the model the one before wrote (one split of K x N forget people, cut in its order),
            the table by request against a model retrained without everyone forgotten so far.
        seeds: one split, pretrain and retrain per seed.
        unlearning_seeds: J; each method prepared and served J times per seed, on the same split, pretrain
            and retrain, each time with other randomness (its initialisation, noise, batch and simulated
            request order: :func:`one_shui.bench.cells.unlearning_seed`); the statistics nest them
            within the seeds (:func:`one_shui.bench.differences.over_seeds`).
        curve: strengths at which every 1-SHUI method that declares one is served again after its row's
            test, as multiples of its operating point (:mod:`one_shui.bench.curves`), e.g.
            ``[0, 0.5, 1, 2, 4]``; empty: no curves. A bench of one request only.
        shadows: K, the shadow models of the per-person attack (PROTOCOL §10), per seed: each trained with
            the ``train`` recipe on the retain people and half of the forget and TEST people
            (:func:`one_shui.data.splits.shadow_half`), then tested as the Pretrain row is; an even number,
            at least 4; 0: no per-person attack. A bench of one request only.
        relearn_steps: the relearning attack (:mod:`one_shui.bench.relearning`): after each row's test, its
            model fine-tuned this many steps on the support portraits, and on a retain sample, and
            evaluated again; 0: none. A bench of one request only.
        relearn_lr: the fine-tuning's learning rate (plain SGD); default the model's own training ``lr``,
            the step an attacker who fine-tunes it would take.
        relearn_sample: the retain photos it fine-tunes on; default as many as the support has
            (N), so that the two samples differ only in whose photos they are.
        weights_file: the backbone's ImageNet weights from this local file (a machine without internet):
            given to the runs of the ``train`` recipe (the pretrain, the retrain, the shadow models), which
            start from them; the methods start from those runs' models.
        trainer: configs stacked in front of every run (e.g. ``configs/trainer/gpu.yaml``).
        args: `one-shui` arguments added to every run, e.g. ``--data.init_args.root=/datasets``.
        method_args: `one-shui` arguments added to the runs of every method (not to the Pretrain and
            Retrain rows), before the method's own ``args``.
        evaluation_options: options of every method's and of the Pretrain and Retrain rows' evaluation
            (not of the training), checked against :class:`UnlearningMethod`'s: e.g. the published
            metrics, ``{mia: published}``.
        evaluation_args: other `one-shui` arguments added to those runs, after ``evaluation_options``.
        out: the output folder; the bench writes to ``<out>/<name>``.
        rmia_offline_a: RMIA's offline ``a``, set here (0.3, the RMIA authors' default), never chosen
            on the forget set or TEST.
        wandb: W&B logging.
    """

    name: str
    data: str
    train: str
    methods: list[Method]
    evaluate: str = "configs/methods/no_unlearning.yaml"
    request_size: int = 20
    requests: int = 1
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    unlearning_seeds: int = 1
    curve: list[float] = field(default_factory=list)
    shadows: int = 0
    relearn_steps: int = 0
    relearn_lr: float | None = None
    relearn_sample: int | None = None
    weights_file: str | None = None
    trainer: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    method_args: list[str] = field(default_factory=list)
    evaluation_options: dict[str, Any] = field(default_factory=dict)
    evaluation_args: list[str] = field(default_factory=list)
    out: str = "outputs/bench"
    rmia_offline_a: float = 0.3
    wandb: Wandb = field(default_factory=Wandb)

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.name

    @property
    def evaluation_arguments(self) -> list[str]:
        """The `one-shui` arguments of every row's evaluation: ``evaluation_options``, then
        ``evaluation_args``."""
        return [*model_arguments(self.evaluation_options), *self.evaluation_args]

    @property
    def train_arguments(self) -> list[str]:
        """The `one-shui` arguments that the runs of the ``train`` recipe add to every run's: its weights."""
        return [f"--model.init_args.weights_file={self.weights_file}"] if self.weights_file else []

    @property
    def references(self) -> bool:
        """Whether each method row has its RMIA reference, the method applied to the retrained model: in a
        bench of one request (a chain of requests has no single retrained model to start from)."""
        return self.requests == 1

    @property
    def relearning(self) -> list[str]:
        """What keys a row's cell when it relearns (its figures depend on them); none without."""
        if not self.relearn_steps:
            return []
        return [f"relearn={self.relearn_steps},{self.relearn_lr},{self.relearn_sample}"]

    @property
    def split_size(self) -> int:
        """The split's request size: everyone the bench forgets, over all its requests."""
        return self.request_size * self.requests


def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="one-shui-bench", description=__doc__, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a bench config, configs/bench/<name>.yaml")
    parser.add_class_arguments(Bench, None)
    return parser


def parse(args: list[str] | None = None) -> Bench:
    """The bench of the command line, checked (see :func:`check`).

    `one-shui` arguments may be given too, as to `one-shui fit` (``--trainer.max_epochs=1``): ``--data.*``
    and ``--trainer.*`` are added to every run, ``--model.*`` to the methods' runs. A W&B sweep whose
    parameters are named so (``model.init_args.meta_lr``) therefore drives the bench through ``${args}``.
    """
    own, runs, methods = split_arguments(sys.argv[1:] if args is None else args)
    cli = parser()
    try:
        values = cli.instantiate(cli.parse_args(own, defaults=True)).as_dict()
    except ArgumentError as err:
        raise BenchConfigError(str(err)) from None
    bench = Bench(**{key: values[key] for key in Bench.__dataclass_fields__})
    bench = replace(bench, args=[*bench.args, *runs], method_args=[*bench.method_args, *methods])
    return check(replace(bench, name=folder_name(bench.name, own, [*runs, *methods])))


# the options that leave a bench's folder its config's name: where it is read and written, and W&B's
KEPT_NAME = ("--config", "--name", "--out", "--wandb")


def folder_name(name: str, own: list[str], runs: list[str]) -> str:
    """The bench's name, its folder's under ``out``: the config's when the command line changes nothing
    but :data:`KEPT_NAME` (or names it with ``--name``, or runs under a W&B sweep agent, whose runs share
    one group); otherwise ``<name>-<8 hex digits of the changes>``, so that a run with other settings
    never writes over the config's results."""
    changes, tokens = [], iter(own)
    for token in tokens:
        key = token.partition("=")[0]
        value = token.partition("=")[2] if "=" in token else next(tokens, "")
        if key == "--name":
            return name
        if not key.startswith(KEPT_NAME):
            changes.append(f"{key}={value}")
    changes += runs
    if not changes or os.environ.get("WANDB_SWEEP_ID"):
        return name
    digest = hashlib.sha256("\n".join(changes).encode()).hexdigest()
    return f"{name}-{digest[:8]}"


def split_arguments(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The bench's own arguments, the `one-shui` arguments for every run and those for the methods' runs."""
    own, runs, methods = [], [], []
    tokens = iter(args)
    for token in tokens:
        name = token.partition("=")[0]
        if not name.startswith(ONE_SHUI_ARGUMENTS):
            own.append(token)
            continue
        if "=" not in token:
            token = f"{token}={next(tokens, '')}"
        (methods if name.startswith("--model.") else runs).append(token)
    return own, runs, methods


def check(bench: Bench) -> Bench:
    """The bench with every method's label (its class name unless given); refused, before anything
    runs, when it would fail later: a missing config, a method YAML that names no one_shui method,
    repeated labels, no seeds."""
    layout.component(bench.name, "bench name")  # its folder under out
    writable_folder(bench.folder, f"bench {bench.name}: out {bench.out}")
    configs = {"data": bench.data, "train": bench.train, "evaluate": bench.evaluate}
    configs.update({f"trainer[{k}]": path for k, path in enumerate(bench.trainer)})
    for key, path in configs.items():
        if not Path(path).is_file():
            raise BenchConfigError(f"bench {bench.name}: {key} config {path} does not exist")
    if bench.weights_file and not Path(bench.weights_file).expanduser().is_file():
        raise BenchConfigError(
            f"bench {bench.name}: weights_file {bench.weights_file} does not exist; give the path of the "
            "backbone's ImageNet weights (e.g. vit_b16.safetensors)"
        )
    if min(bench.request_size, bench.requests, bench.unlearning_seeds) < 1:
        raise BenchConfigError(
            f"bench {bench.name}: request_size, requests and unlearning_seeds must be at least 1 (got "
            f"{bench.request_size}, {bench.requests} and {bench.unlearning_seeds})"
        )
    if bench.curve and (bench.requests > 1 or min(bench.curve) < 0):
        raise BenchConfigError(
            f"bench {bench.name}: a curve is served on a bench of one request, at strengths of at least 0 "
            f"(got requests {bench.requests} and curve {bench.curve})"
        )
    if bench.shadows and (bench.requests > 1 or bench.shadows < 4 or bench.shadows % 2):
        raise BenchConfigError(
            f"bench {bench.name}: shadows must be 0 or an even number of at least 4 (each person in half of "
            f"them), on a bench of one request (got shadows {bench.shadows} and requests {bench.requests})"
        )
    if bench.relearn_steps and (bench.requests > 1 or bench.relearn_steps < 0):
        raise BenchConfigError(
            f"bench {bench.name}: relearn_steps must be at least 0, and relearning runs on a bench of one "
            f"request (got relearn_steps {bench.relearn_steps} and requests {bench.requests})"
        )
    if (bench.relearn_lr is not None and not bench.relearn_lr > 0) or (bench.relearn_sample or 1) < 1:
        raise BenchConfigError(
            f"bench {bench.name}: relearn_lr must be above 0 and relearn_sample at least 1 (got "
            f"{bench.relearn_lr} and {bench.relearn_sample})"
        )
    if not bench.seeds or len(set(bench.seeds)) != len(bench.seeds):
        raise BenchConfigError(
            f"bench {bench.name}: seeds must be distinct and at least one (got {bench.seeds})"
        )
    try:
        method_options(UnlearningMethod, bench.evaluation_options, "evaluation_options")
    except UserError as err:
        raise BenchConfigError(f"bench {bench.name}, {err}") from None
    methods = []
    for method in bench.methods:
        try:
            runs = config_method(method.config)
            if method.setting:
                method_options(runs, setting_options(method.setting), method.setting)
            method_options(runs, method.options, "options")
        except UserError as err:
            raise BenchConfigError(
                f"bench {bench.name}, method {method.label or method.config}: {err}"
            ) from None
        beyond = [pool for pool in runs.reads if pool != "support"]
        if bench.requests > 1 and beyond:
            raise BenchConfigError(
                f"bench {bench.name}, method {method.label or method.config}: {runs.__name__} reads the full "
                f"{' and '.join(beyond)} sets, which requests do not bring: it cannot serve requests one "
                "after another"
            )
        methods.append(replace(method, label=method.label or runs.__name__))
    labels = [method.label for method in methods]
    repeated = {label for label in labels if labels.count(label) > 1 or label in ORIGINAL}
    if repeated:
        raise BenchConfigError(
            f"bench {bench.name}: method labels must be unique and not {list(ORIGINAL)}: {sorted(repeated)}"
        )
    return replace(bench, methods=methods)


def model_arguments(options: dict[str, Any]) -> list[str]:
    """A model's ``options`` as `one-shui` arguments."""
    return [f"--model.init_args.{key}={_text(value)}" for key, value in options.items()]


def _text(value: Any) -> str:
    """A value as the command line gives it (a string as it is, anything else as JSON, which YAML reads)."""
    return value if isinstance(value, str) else json.dumps(value)

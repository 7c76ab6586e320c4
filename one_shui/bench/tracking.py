"""W&B for the bench: one run per cell, grouped by the bench's name (Lightning's WandbLogger writes into
it), and one summary run holding the results table and the plots."""

from __future__ import annotations

import contextlib
import json
import netrc
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from .config import Bench
from .environment import environment

LOGGER = "lightning.pytorch.loggers.WandbLogger"
SWEEP_ENVIRONMENT = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")


def sweep_run() -> str | None:
    """``<sweep id>-<run id>`` when this process runs under a W&B sweep agent, else None."""
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return f"{sweep}-{run}" if sweep and run else None


def wandb_mode(configured: str | None) -> str:
    """The mode the bench logs in: the config's, else WANDB_MODE, else online when W&B has an API key
    (WANDB_API_KEY or ``wandb login``), else offline."""
    mode = configured or os.environ.get("WANDB_MODE")
    if mode:
        return "disabled" if mode == "dryrun" else mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    with contextlib.suppress(FileNotFoundError, netrc.NetrcParseError, OSError):
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return "online"
    return "offline"


def sync_command(bench: Bench) -> str:
    """The `wandb sync` command that uploads a bench's offline runs: its cells' (``<out>/cells/<dataset>/
    N<N>-seed<seed>/<cell>/wandb``) and its summary run (``<out>/<name>/wandb``)."""
    return f"wandb sync {bench.out}/cells/*/*/*/wandb/offline-run-* {bench.folder}/wandb/offline-run-*"


class Tracker:
    """Opens a W&B run around each cell that runs (a reused cell keeps the run it had)."""

    def __init__(self, bench: Bench):
        self.bench, self.mode = bench, wandb_mode(bench.wandb.mode)
        self.environment = environment()
        self.run = None
        # Under a W&B sweep agent, the agent's run is the summary run; the cells' runs are runs of their own.
        self.sweep_run = sweep_run()
        self.sweep = {key: os.environ.pop(key) for key in SWEEP_ENVIRONMENT if key in os.environ}
        if self.mode == "offline":
            print(
                f"W&B offline: each run is saved in its cell's folder and the summary run in the bench's; "
                f"after `wandb login`, `{sync_command(bench)}` uploads them",
                file=sys.stderr,
            )

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    @contextlib.contextmanager
    def cell(self, folder: Path, name: str, job_type: str, config: dict) -> Iterator[list[str]]:
        """Around one cell (its run ``name``, ``job_type`` and ``config``): yields the `one-shui`
        arguments that log into its run."""
        if not self.enabled:
            yield []
            return
        config = {**config, "request_size": self.bench.request_size, "environment": self.environment}
        run = self._init(folder, name=name, job_type=job_type, config=config)
        self.run = run
        logger = {"class_path": LOGGER, "init_args": {"project": self.bench.wandb.project}}
        try:
            yield [f"--trainer.logger={json.dumps(logger)}"]
        except BaseException:
            run.finish(exit_code=1)
            raise
        else:
            run.finish()
        finally:
            self.run = None

    def summarise(self, record: dict) -> None:
        """The cell's metrics and phase times in its run's summary."""
        if self.run is not None:
            seconds = {f"seconds/{phase}": value for phase, value in record.get("seconds", {}).items()}
            self.run.summary.update({**record.get("metrics", {}), **seconds})

    def summary(
        self,
        folder: Path,
        rows: Sequence[Mapping],
        means: Mapping[str, Mapping[str, tuple]],
        plots: Sequence[Path],
        env: Mapping,
        paired: Sequence[Mapping],
    ) -> None:
        """The summary run: the results table and the ``paired`` differences from Pretrain (paired.csv's
        rows) as ``wandb.Table``, each row's means as ``<row>/<metric>`` (what a sweep reads), the plots,
        and the environment ``env`` in its config."""
        if not self.enabled:
            return
        import wandb

        os.environ.update(self.sweep)
        config = {
            "bench": self.bench.name,
            "seeds": self.bench.seeds,
            "request_size": self.bench.request_size,
            "environment": dict(env),
        }
        run = self._init(folder, name=f"{self.bench.name} summary", job_type="summary", config=config)
        run.log(
            {
                "results": _table(wandb, rows),
                **({"paired": _table(wandb, paired)} if paired else {}),
                **{
                    f"{label}/{key}": mean
                    for label, values in means.items()
                    for key, (mean, _) in values.items()
                },
                **{plot.stem: wandb.Image(str(plot)) for plot in plots},
            }
        )
        run.finish()

    def _init(self, folder: Path, **kwargs):
        import wandb  # imported when used: a bench without W&B does not pay for it

        folder.mkdir(parents=True, exist_ok=True)
        wandb_config = self.bench.wandb
        return wandb.init(
            project=wandb_config.project,
            entity=wandb_config.entity,
            group=self.bench.name,
            mode=self.mode,
            dir=str(folder),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True),
            **kwargs,
        )


def _table(wandb, rows: Sequence[Mapping]):
    """``rows`` (dicts with the same keys) as a ``wandb.Table``."""
    columns = list(rows[0])
    return wandb.Table(columns=columns, data=[[row[column] for column in columns] for row in rows])

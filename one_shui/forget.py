"""`one-shui-forget`: serve a real forget request with a prepared unlearning method.

    one-shui-forget METHOD.ckpt REQUEST.csv [--out UNLEARNED.ckpt]
    one-shui-forget METHOD.yaml REQUEST.csv --pretrain-ckpt ORIGINAL.ckpt [--out UNLEARNED.ckpt]

METHOD.ckpt is what the method's ``fit`` wrote (``<run>/checkpoints/last.ckpt``); it is applied to the
original model it was prepared on (its pretrain checkpoint). A method with nothing to prepare (JiT) is
given by its config instead (``configs/methods/jit.yaml``: its model options are used) and the
original model by ``--pretrain-ckpt``. Methods that read the full forget and retain sets (SCRUB, Bad
Teacher) are benchmark references and cannot serve a request. REQUEST.csv has a header and one row per
portrait: ``image`` (a file under the CSV's folder, or under ``--root``), ``identity`` (as in the
training data) and, where the method reads them (its ``reads_targets``), ``targets`` (multilabel: the
0/1 values separated by spaces; classification: the class index). The unlearned model is written as a
model checkpoint (read by ``Classifier.from_checkpoint`` and ``one-shui test``), by default in the run
layout's ``unlearned`` folder of the original model's setting, named after the request, with a JSON
receipt beside it: who was forgotten, by which method and version, the SHA-256 of every input and of
the output, and the time taken. On any error nothing is written.

Requests arrive one after another: ``--on`` serves a request on the model an earlier request wrote (by
default it is served on the original model). Each receipt names its parent, the model it was served on,
with that model's receipt, so the receipts chain back to the original model; ``one-shui-verify`` checks a
chain. A model outside this method's chain, and a request naming someone forgotten earlier in the chain,
are refused.

A guard stops a destructive step, and a chain that slides: the model is scored on the method's check set
(VAL images no request touches; a prepared method carries it, a method given by its config draws it from
``--data``) before and after the request, and so is the original model of the chain. A drop of more than
``--max-drop`` points from the model served on, or of more than ``--max-total-drop`` from the original,
refuses to write, unless ``--force``; a check set too small to resolve those bounds is refused. The
figures go into the receipt.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__, guard, layout, receipts
from .atomic import publish, temporary, writable_folder
from .checkpoints import load_checkpoint, sha256_of
from .data.datamodule import build_transform
from .data.images import ImageError, read_rgb
from .errors import (
    CommandLineParser,
    MissingFileError,
    OutputExistsError,
    SettingError,
    StorageError,
    UserError,
    exit_on_user_error,
)
from .methods.base import MethodSetupError, UnlearningMethod
from .methods.loading import load_from_config, load_prepared


class RequestError(UserError, ValueError):
    """The request CSV is empty, malformed or lacks what the method needs."""


class NonFiniteModelError(UserError, FloatingPointError):
    """The unlearned model has NaN or infinite weights."""


def read_request(path: Path, root: Path) -> list[dict[str, str]]:
    """The rows of the request CSV, each with an ``image`` file inside ``root``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(file)
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
            columns = [c.strip() for c in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as err:
        raise RequestError(f"{path}: not a readable CSV file ({err})") from None
    missing = [c for c in ("image", "identity") if c not in columns]
    if missing:
        raise RequestError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must name image,identity"
        )
    if not rows:
        raise RequestError(f"{path}: the request names no portrait; nothing to forget")
    for line, row in enumerate(rows, start=2):
        if not row["image"] or not row["identity"]:
            raise RequestError(f"{path}, line {line}: every row needs an image and an identity")
        row["file"] = str(_inside(root, row["image"]))
    return rows


def _inside(root: Path, name: str) -> Path:
    try:
        file = (root / name).resolve()
        if not file.is_relative_to(root):
            raise ImageError(f"{name}: refused, it leads outside the portrait folder {root}")
        if not file.exists():
            raise MissingFileError(f"portrait {file} does not exist")
        if not file.is_file():
            raise ImageError(f"portrait {file} is not a regular file (a folder, a FIFO or a device?)")
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError) as err:  # a link loop, a NUL byte, a name too long
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise ImageError(f"portrait {name!r}: cannot be read ({reason})") from None
    return file


def load_portraits(rows: list[dict[str, str]], image_size: int) -> tuple[torch.Tensor, list[str]]:
    """Every portrait decoded and resized as the model was tested (the test transform), with the
    SHA-256 of the bytes that were read."""
    transform = build_transform(image_size, train=False)
    images, hashes = [], []
    for row in rows:
        data = Path(row["file"]).read_bytes()
        images.append(transform(read_rgb(data, row["file"])))
        hashes.append(hashlib.sha256(data).hexdigest())
    return torch.stack(images), hashes


def parse_targets(rows: list[dict[str, str]], task: str, num_classes: int, needed: bool) -> torch.Tensor:
    """The targets of the portraits, checked against the model's task; zeros only for a method that
    declares it reads none."""
    if not needed:
        shape = (len(rows), num_classes) if task == "multilabel" else (len(rows),)
        return torch.zeros(shape, dtype=torch.float32 if task == "multilabel" else torch.long)
    targets = []
    for row in rows:
        text = row.get("targets", "")
        try:
            values = [int(v) for v in text.split()]
        except ValueError:
            values = []
        valid = (
            len(values) == num_classes and set(values) <= {0, 1}
            if task == "multilabel"
            else len(values) == 1 and 0 <= values[0] < num_classes
        )
        if not valid:
            expected = (
                f"{num_classes} values 0 or 1" if task == "multilabel" else f"a class in 0..{num_classes - 1}"
            )
            raise RequestError(
                f"portrait {row['image']}: this method reads the targets; give {expected} in column targets"
            )
        targets.append(values if task == "multilabel" else values[0])
    return torch.tensor(targets, dtype=torch.float32 if task == "multilabel" else torch.long)


def is_config(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def load_method(path: Path, pretrain_ckpt: str | None) -> UnlearningMethod:
    """The method that serves the request: a prepared checkpoint, or the YAML config of a method with
    nothing to prepare; either way one whose ``forget`` reads the support set only."""
    if is_config(path):
        if pretrain_ckpt is None:
            raise MethodSetupError(
                f"{path} is a method config: give the model to unlearn with --pretrain-ckpt"
            )
        method = load_from_config(path, pretrain_ckpt)
    else:
        method = load_prepared(path, pretrain_ckpt)
    beyond = [pool for pool in method.reads if pool != "support"]
    if beyond:
        raise MethodSetupError(
            f"{path}: {type(method).__name__} reads the full {' and '.join(beyond)} sets, which a request "
            f"does not bring: it is a benchmark reference, not a method that serves requests"
        )
    return method


def forget(args: argparse.Namespace) -> dict:
    """Serve the request; returns the receipt (also written beside the output)."""
    start = time.perf_counter()
    for option, bound in (("--max-drop", args.max_drop), ("--max-total-drop", args.max_total_drop)):
        if not (math.isfinite(bound) and bound > 0):
            raise SettingError(f"{option} {bound}: give a number of points, more than 0")
    request = Path(args.request)
    if not request.is_file():
        raise MissingFileError(f"request {request} does not exist")
    root = Path(args.root or request.parent).resolve()
    rows = read_request(request, root)
    device = serving_device(args.device)
    method = load_method(Path(args.method), args.pretrain_ckpt)
    check = guard.check_set_of(method, args.data, args.method, is_config(args.method))
    guard.require_resolving(check, min(args.max_drop, args.max_total_drop))
    out, receipt_path = outputs(Path(args.out) if args.out else default_out(method, request))
    method.to(device)
    method.check_set = check[0]
    original = method.check_score()  # the method holds the original model until it is served on another
    parent, before = serve_on(method, Path(args.on) if args.on else None)
    served = original if parent["receipt"] is None else method.check_score()  # the model served on
    hp = method.model.hparams
    identities = method.identity_ids([row["identity"] for row in rows])
    again = sorted({method.identities[i] for i in identities.tolist()} & set(before))
    if again:
        raise RequestError(
            f"{', '.join(map(repr, again))} already forgotten earlier in the chain of {args.on}: nothing "
            "of them is left to forget; drop them from the request"
        )
    targets = parse_targets(rows, hp.task, hp.num_classes, method.reads_targets)
    images, hashes = load_portraits(rows, hp.image_size)
    step = time.perf_counter()
    method.forget((images.to(device), identities.to(device), targets.to(device)))
    seconds = time.perf_counter() - step
    require_finite(method)
    scores = (original, served, method.check_score())
    verdict = guard.judge(method, check, scores, (args.max_drop, args.max_total_drop), args.force)
    receipt = {
        "identities": sorted({method.identities[i] for i in identities.tolist()}),  # as trained
        "method": method.class_path(),
        "one_shui_version": __version__,
        "split": method.split.fingerprint,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "parent": parent,
        "forgotten_before": before,
        "guard": verdict,
        "inputs": {
            ("method_config" if is_config(args.method) else "method_checkpoint"): {
                "path": str(args.method),
                "sha256": sha256_of(args.method),
            },
            "pretrain_checkpoint": {"path": str(method.original.path), "sha256": method.original.sha256},
            "request": {"path": str(request), "sha256": sha256_of(request)},
            "root": str(root),
            "portraits": [
                {"image": row["image"], "identity": row["identity"], "sha256": digest}
                for row, digest in zip(rows, hashes, strict=True)
            ],
        },
        "seconds": {"forget": round(seconds, 4)},
    }
    _write(method.cpu(), receipt, out, receipt_path, start)
    return receipt


def serve_on(method: UnlearningMethod, model: Path | None) -> tuple[dict, list[str]]:
    """Put the deployed ``model`` in ``method`` (by default its original model stays): the original or
    the last model of a chain of requests served by this method on this split. Returns the receipt's
    ``parent`` entry and the people forgotten earlier in the chain."""
    if model is not None and not model.is_file():
        raise MissingFileError(f"--on {model} does not exist: give the deployed model, an earlier --out")
    original = method.original
    links = receipts.chain(model, original.sha256) if model is not None else []
    if not links:
        return {"path": str(original.path.resolve()), "sha256": original.sha256, "receipt": None}, []
    last = links[-1].receipt
    for field, value in (("method", method.class_path()), ("split", method.split.fingerprint)):
        if last.get(field) != value:
            raise receipts.ChainError(
                f"{model} was written by a request of another {field} ({last.get(field)}, not {value})"
            )
    method.model.load_state_dict(load_checkpoint(model)["state_dict"])
    receipt = receipts.receipt_path(model)
    parent = {
        "path": str(model.resolve()),
        "sha256": last["output"]["sha256"],
        "receipt": {"path": str(receipt.resolve()), "sha256": sha256_of(receipt)},
    }
    return parent, receipts.forgotten(links)


def serving_device(name: str | None) -> torch.device:
    """The device named by ``--device`` (by default CUDA when there is one), refused when it is not here."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SettingError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use --device cpu"
        )
    return device


def outputs(out: Path) -> tuple[Path, Path]:
    """The checkpoint and its receipt (the same name with .json); refused when either exists, when they
    would be one file, or when a folder on the way is a file."""
    receipt = receipts.receipt_path(out)
    if receipt == out:
        raise SettingError(
            f"--out {out}: its receipt is written beside it as <name>.json; give the checkpoint another "
            "suffix (.ckpt)"
        )
    writable_folder(out.parent, f"--out {out}")
    for path in (out, receipt):
        if os.path.lexists(path):
            raise OutputExistsError(f"{path} exists; choose another --out or remove it")
    return out, receipt


def require_finite(method: UnlearningMethod) -> None:
    """Refuse an unlearned model with NaN or infinite weights: it would serve nothing but NaN."""
    broken = [
        name
        for name, t in method.model.state_dict().items()
        if t.is_floating_point() and not t.isfinite().all()
    ]
    if broken:
        raise NonFiniteModelError(
            f"the unlearned model has NaN or infinite weights in {len(broken)} tensor(s) ({broken[0]}, ...); "
            "nothing is written: check the method's settings (its learning rate) and its prepared checkpoint"
        )


def default_out(method: UnlearningMethod, request: Path) -> Path:
    """``<request name>.ckpt`` in the run layout's ``unlearned`` folder of the original model's setting."""
    return method.original.run_dir(layout.SERVED) / f"{request.stem}.ckpt"


def _write(method: UnlearningMethod, receipt: dict, out: Path, receipt_path: Path, start: float) -> None:
    """The checkpoint, then its receipt (with the checkpoint's hash): each whole or not at all, neither
    over a file that another run wrote meanwhile, and never through a link (:func:`atomic.temporary`)."""
    with temporary(out) as (file, tmp):
        try:
            torch.save(method.unlearned_checkpoint({"unlearned": receipt}), file)
        except RuntimeError as err:  # how torch's writer reports a full disk
            raise StorageError(
                f"cannot write {out}: {err}; free some space or choose another --out"
            ) from None
        receipt["output"] = {"path": str(out), "sha256": sha256_of(file)}
        receipt["seconds"]["total"] = round(time.perf_counter() - start, 4)
        publish(file, tmp, out)
    try:
        with temporary(receipt_path) as (file, tmp):
            file.write((json.dumps(receipt, indent=2) + "\n").encode("utf-8"))
            publish(file, tmp, receipt_path)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(
        prog="one-shui-forget", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "method",
        help="the prepared method (<run>/checkpoints/last.ckpt of its fit), or the YAML config of a method "
        "with nothing to prepare (then give --pretrain-ckpt)",
    )
    parser.add_argument("request", help="CSV with columns image, identity (and targets where needed)")
    parser.add_argument(
        "--out",
        help="the unlearned model checkpoint to write (+ .json receipt); default: "
        "outputs/<dataset>/N<N>-seed<seed>/unlearned/<request name>.ckpt, the original model's setting",
    )
    parser.add_argument("--root", help="folder of the portraits (default: the CSV's folder); nothing outside")
    parser.add_argument(
        "--pretrain-ckpt", help="the original model (default for a prepared method: the path recorded by fit)"
    )
    parser.add_argument(
        "--on",
        help="the deployed model to serve the request on: the original model (the default) or the last "
        "model of its chain of requests (an earlier --out, its receipt beside it)",
    )
    parser.add_argument(
        "--data",
        help="for a method given by its config: the data config of the model (the check set of the guard is "
        "drawn from its VAL); a prepared method carries its own",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=guard.MAX_DROP,
        help="the guard: refuse to write when the unlearned model loses more than this many points of the "
        "metric (mAP or accuracy x100) on the check set, against the model it was served on (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--max-total-drop",
        type=float,
        default=guard.MAX_TOTAL_DROP,
        help="the guard: refuse to write when the unlearned model loses more than this many points on the "
        "check set against the original model of its chain, over all its requests (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="write the unlearned model even when the guard refuses it"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    receipt = exit_on_user_error("one-shui-forget", lambda: forget(parser.parse_args(argv)))
    print(
        f"forgot {len(receipt['identities'])} identities in {receipt['seconds']['forget']:.3f} s: "
        f"{receipt['output']['path']} (receipt {receipts.receipt_path(Path(receipt['output']['path']))})"
    )

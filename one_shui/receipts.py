"""Chains of forget requests: each model that `one-shui-forget` writes has a receipt beside it naming its
parent, the model the request was served on, so the receipts lead back, link by link, to the original
model the method was prepared on.

    one-shui-verify UNLEARNED.ckpt      # every link re-hashed; the people forgotten so far; exit 1 on a break

A link holds when the parent's SHA-256 (and its receipt's, where it has one) is the one the child's
receipt recorded, every receipt names the same method, split and original model, and each model is the
one its own receipt (and the copy inside the checkpoint) names.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import RECORD_KEY, CheckpointError, load_checkpoint, sha256_of
from .errors import CommandLineParser, MissingFileError, UserError, exit_on_user_error


class ChainError(UserError, ValueError):
    """A model is not in a chain of receipts back to the original model, or a link is broken."""


@dataclass(frozen=True)
class Link:
    """One served request: the model it wrote and its receipt."""

    model: Path
    receipt: dict


def receipt_path(model: Path) -> Path:
    return model.with_suffix(".json")


def parent_of(receipt: dict) -> dict:
    """The model a request was served on: ``parent`` (a receipt written since chains exist), or the
    original model (an earlier receipt, always served on it)."""
    return receipt.get("parent") or {**receipt["inputs"]["pretrain_checkpoint"], "receipt": None}


def read_link(model: Path, digest: str) -> Link:
    """The receipt beside ``model`` (SHA-256 ``digest``), checked against it: the model's hash and the
    receipt's copy inside the checkpoint."""
    path = receipt_path(model)
    if not path.is_file():
        raise ChainError(
            f"{model}: no receipt {path.name} beside it, so it is neither the original model nor one that "
            "one-shui-forget wrote; serve the request on the original model or on the last one of its chain"
        )
    try:
        receipt = json.loads(path.read_text(encoding="utf-8"))
        hashes = (parent_of(receipt)["sha256"], receipt["output"]["sha256"])
        if not all(isinstance(h, str) for h in hashes) or not isinstance(receipt["identities"], list):
            raise TypeError("hashes and identities")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ChainError(f"{path}: not a one-shui-forget receipt ({err!r})") from None
    if digest != receipt["output"]["sha256"]:
        raise ChainError(f"{model} was altered after {path.name} was written: its SHA-256 differs")
    try:
        embedded = load_checkpoint(model, mmap=True)[RECORD_KEY].get("unlearned")
    except (CheckpointError, KeyError, TypeError, AttributeError):
        embedded = None
    if not isinstance(embedded, dict) or _signed(embedded) != _signed(receipt):
        raise ChainError(f"{path} was altered after it was written: it is not the copy inside {model}")
    return Link(model, receipt)


def _signed(receipt: dict) -> dict:
    """What the checkpoint's own copy of its receipt holds (written before the output's hash and the
    total time were known)."""
    return {k: v for k, v in receipt.items() if k not in ("output", "seconds")}


def chain(model: Path, original_sha256: str | None = None) -> list[Link]:
    """The requests from the original model (the first request's parent) to ``model``, oldest first.
    With ``original_sha256``, the chain must start from that model, and that model itself has no links.
    A model outside a chain, or a broken link, is refused."""
    digest = sha256_of(model)
    if digest == original_sha256:
        return []
    links: list[Link] = []
    while True:
        link = read_link(model, digest)
        links.insert(0, link)
        parent = parent_of(link.receipt)
        model = _find(Path(parent["path"]), model)
        digest = sha256_of(model)
        if digest != parent["sha256"]:
            raise ChainError(
                f"{model} was altered after {link.model} was served on it: its SHA-256 differs from the one "
                f"{receipt_path(link.model).name} recorded"
            )
        if parent.get("receipt") is None:  # the original model
            break
        if sha256_of(receipt_path(model)) != parent["receipt"]["sha256"]:
            raise ChainError(f"{receipt_path(model)} was altered after {link.model} was served on it")
    if original_sha256 is not None and digest != original_sha256:
        raise ChainError(
            f"{links[0].model} was served on {model}, which is not the original model of this method"
        )
    _same_setting(links)
    return links


def _find(recorded: Path, child: Path) -> Path:
    """The parent model where its child's receipt recorded it, or else beside the child (a chain moved
    as one folder)."""
    for path in (recorded, child.parent / recorded.name):
        if path.is_file():
            return path
    raise ChainError(
        f"{child} was served on {recorded}, which is not there (nor beside it): restore it to check the chain"
    )


def _same_setting(links: list[Link]) -> None:
    for field in ("method", "split"):
        values = {link.receipt.get(field) for link in links}
        if len(values) > 1:
            raise ChainError(
                f"the chain of {links[-1].model} mixes receipts of another {field} "
                f"({', '.join(map(str, values))})"
            )


def forgotten(links: list[Link]) -> list[str]:
    """Everyone forgotten along the chain, each once, in the order they were forgotten."""
    return list(dict.fromkeys(name for link in links for name in link.receipt["identities"]))


def verify(model: Path) -> tuple[list[Link], list[str]]:
    """Follow ``model``'s chain back to the original (the first receipt's parent): every model and
    receipt re-hashed, every portrait found under its request's folder re-hashed. Returns the links and
    the portraits that could not be found (not a break: a request's portraits may be deleted)."""
    if not model.is_file():
        raise MissingFileError(f"model {model} does not exist: give a model that one-shui-forget wrote")
    links = chain(model)
    missing = []
    for link in links:
        inputs = link.receipt["inputs"]
        root = Path(inputs.get("root") or Path(inputs["request"]["path"]).parent).resolve()
        for portrait in inputs["portraits"]:
            path = (root / portrait["image"]).resolve()
            if not path.is_relative_to(root):
                raise ChainError(
                    f"{receipt_path(link.model)}: portrait {portrait['image']!r} leads outside {root}"
                )
            if not path.is_file():
                missing.append(str(path))
            elif sha256_of(path) != portrait["sha256"]:
                raise ChainError(f"portrait {path} differs from the one {link.model} forgot")
    return links, missing


def guard_line(guard: dict) -> str:
    """The guard's figures of a receipt in a line: the step's drop and the chain's, each with its bound."""

    def figure(drop: str, bound: str, against: str) -> str:
        if guard.get(drop) is None:
            return f"no {against} figure (a receipt of an older one_shui)"
        return f"{guard[drop]:.2f} points under {against} (bound {guard.get(bound)})"

    if not guard:
        return "no figures (a receipt of an older one_shui)"
    verdict = "passed" if guard.get("passed") else "written by --force past a refusal"
    step = figure("drop", "max_drop", "the model served on")
    return f"{verdict}; {step}; {figure('total_drop', 'max_total_drop', 'the original')}"


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(
        prog="one-shui-verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a model that one-shui-forget wrote (its receipt beside it)")
    links, missing = exit_on_user_error("one-shui-verify", lambda: verify(parser.parse_args(argv).model))
    for k, link in enumerate(links, start=1):
        print(f"request {k}: {link.model} forgot {', '.join(link.receipt['identities'])}")
        print(f"  guard: {guard_line(link.receipt.get('guard') or {})}")
    for path in missing:
        print(f"not found, not checked: portrait {path}")
    people = forgotten(links)
    print(f"chain intact: {len(links)} request(s), {len(people)} people forgotten: {', '.join(people)}")

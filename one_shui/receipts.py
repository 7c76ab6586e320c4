"""Chains of forget requests: each model that `one-shui-forget` writes has a receipt beside it naming its
parent, the model the request was served on, so the receipts lead back, link by link, to the original
model the method was prepared on.

    one-shui-verify UNLEARNED.ckpt      # every link re-hashed; the people forgotten so far; exit 1 on a break

A link holds when the parent's SHA-256 (and its receipt's, where it has one) is the one the child's
receipt recorded, every receipt names the same method, split and original model, the chain's root is that
original model (its SHA-256), and each model is the one its own receipt (and the copy inside the
checkpoint) names. A receipt is checked against :data:`SCHEMA` before anything reads it. Every field but
``output`` and ``seconds.total`` is signed (the checkpoint's copy); ``output.sha256`` is recomputed (a
break when it differs), ``output.path`` too (reported, not a break: a chain moves as one folder), and
``seconds.total``, measured after the checkpoint was written, is neither.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from .checkpoints import RECORD_KEY, CheckpointError, load_checkpoint, sha256_of
from .errors import CommandLineParser, MissingFileError, UserError, exit_on_user_error


class ChainError(UserError, ValueError):
    """A model is not in a chain of receipts back to the original model, or a link is broken."""


_TEXT, _NUMBER = {"type": "string"}, {"type": "number"}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_FILE = {"type": "object", "required": ["path", "sha256"], "properties": {"path": _TEXT, "sha256": _HASH}}
# What one-shui-forget writes (a JSON schema, checked by jsonschema before anything reads a receipt).
# ``parent`` is absent from the receipts written before chains: they were served on the original model.
SCHEMA = {
    "type": "object",
    "required": ["identities", "method", "split", "inputs", "seconds", "output"],
    "properties": {
        "identities": {"type": "array", "items": _TEXT, "minItems": 1},
        "method": _TEXT,
        "one_shui_version": _TEXT,
        "split": _TEXT,
        "created": _TEXT,
        "device": _TEXT,
        "parent": {
            "type": "object",
            "required": ["path", "sha256", "receipt"],
            "properties": {"path": _TEXT, "sha256": _HASH, "receipt": {"oneOf": [{"type": "null"}, _FILE]}},
        },
        "forgotten_before": {"type": "array", "items": _TEXT},
        "guard": {
            "type": "object",
            "properties": {
                **dict.fromkeys(("original", "before", "after", "drop", "total_drop"), _NUMBER),
                **dict.fromkeys(("max_drop", "max_total_drop"), _NUMBER),
                **dict.fromkeys(("passed", "forced"), {"type": "boolean"}),
            },
        },
        "inputs": {
            "type": "object",
            "required": ["pretrain_checkpoint", "request", "portraits"],
            "properties": {
                **dict.fromkeys(
                    ("method_config", "method_checkpoint", "pretrain_checkpoint", "request"), _FILE
                ),
                "root": _TEXT,
                "portraits": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["image", "identity", "sha256"],
                        "properties": {"image": _TEXT, "identity": _TEXT, "sha256": _HASH},
                    },
                },
            },
        },
        "seconds": {
            "type": "object",
            "required": ["forget"],
            "properties": {"forget": _NUMBER, "total": _NUMBER},
        },
        "output": _FILE,
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
UNSIGNED = ("output", "seconds.total")  # written after the checkpoint that holds the signed copy


def read_receipt(path: Path) -> dict:
    """The receipt at ``path``, checked against :data:`SCHEMA`; anything else is one :class:`ChainError`
    naming the file and what is wrong."""
    try:
        receipt = json.loads(path.read_text(encoding="utf-8"))
        error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(receipt))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChainError(f"{path}: not a readable one-shui-forget receipt ({err})") from None
    except RecursionError:
        raise ChainError(f"{path}: not a one-shui-forget receipt (nested too deeply to read)") from None
    if error is not None:
        where = "the receipt" if not error.absolute_path else error.json_path
        detail = " ".join(error.message.split())
        raise ChainError(f"{path}: not a one-shui-forget receipt ({where}: {detail[:200]})")
    return receipt


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
    receipt = read_receipt(path)
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
    """What the checkpoint's own copy of its receipt holds: all of it but :data:`UNSIGNED` (written
    before the output's hash and the total time were known)."""
    signed = {k: v for k, v in receipt.items() if k != "output"}
    if isinstance(signed.get("seconds"), dict):
        signed["seconds"] = {k: v for k, v in signed["seconds"].items() if k != "total"}
    return signed


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
        if not receipt_path(model).is_file():
            raise ChainError(
                f"{link.model} was served on {model}, whose receipt {receipt_path(model).name} is not there: "
                "restore it to check the chain"
            )
        if sha256_of(receipt_path(model)) != parent["receipt"]["sha256"]:
            raise ChainError(f"{receipt_path(model)} was altered after {link.model} was served on it")
    if original_sha256 is not None and digest != original_sha256:
        raise ChainError(
            f"{links[0].model} was served on {model}, which is not the original model of this method"
        )
    _same_setting(links)
    _rooted(links, model, digest)
    return links


def _rooted(links: list[Link], root: Path, digest: str) -> None:
    """Refuse a chain whose root (``root``, SHA-256 ``digest``) is not the original model that every
    receipt names (``inputs.pretrain_checkpoint``): a receipt re-pointed at another file."""
    for link in links:
        named = link.receipt["inputs"]["pretrain_checkpoint"]
        if named["sha256"] != digest:
            raise ChainError(
                f"{receipt_path(link.model)} names the original model {named['path']} "
                f"(SHA-256 {named['sha256'][:12]}...), but its chain starts at {root} "
                f"({digest[:12]}...): the chain was re-rooted"
            )


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


def verify(model: Path) -> tuple[list[Link], list[str], list[str]]:
    """Follow ``model``'s chain back to the original (the first receipt's parent): every model and
    receipt re-hashed, every portrait found under its request's folder re-hashed. Returns the links, the
    portraits that could not be found (not a break: a request's portraits may be deleted) and where an
    unsigned field differs from what it recomputes (the model's path: a chain moved as one folder)."""
    if not model.is_file():
        raise MissingFileError(f"model {model} is not a file: give a model that one-shui-forget wrote")
    links = chain(model)
    missing, moved = [], []
    for link in links:
        missing += _missing_portraits(link)
        recorded = link.receipt["output"]["path"]
        if not _at(recorded, link.model):
            moved.append(
                f"{receipt_path(link.model)}: output.path says {recorded}, the model is at {link.model}"
            )
    return links, missing, moved


def _at(recorded: str, model: Path) -> bool:
    """Whether the path a receipt recorded (absolute, or relative to where the request was served) is
    where ``model`` is."""
    path, parts = Path(recorded), model.resolve().parts
    try:
        return (
            path.resolve() == model.resolve()
            if path.is_absolute()
            else parts[-len(path.parts) :] == path.parts
        )
    except (OSError, ValueError, RuntimeError):  # a forged path: a NUL byte, a link loop
        return False


def _missing_portraits(link: Link) -> list[str]:
    """The portraits of ``link``'s request that are not under its folder any more; one that is there and
    differs from what was forgotten, or that leads outside the folder, breaks the chain."""
    inputs, missing = link.receipt["inputs"], []
    root = Path(inputs.get("root") or Path(inputs["request"]["path"]).parent)
    for portrait in inputs["portraits"]:
        try:
            path = (root.resolve() / portrait["image"]).resolve()
            inside, found = path.is_relative_to(root.resolve()), path.is_file()
        except (OSError, ValueError, RuntimeError) as err:  # a forged name: a NUL byte, a link loop
            raise ChainError(f"{receipt_path(link.model)}: portrait {portrait['image']!r} ({err})") from None
        if not inside:
            raise ChainError(
                f"{receipt_path(link.model)}: portrait {portrait['image']!r} leads outside {root}"
            )
        if not found:
            missing.append(str(path))
        elif sha256_of(path) != portrait["sha256"]:
            raise ChainError(f"portrait {path} differs from the one {link.model} forgot")
    return missing


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
    links, missing, moved = exit_on_user_error(
        "one-shui-verify", lambda: verify(parser.parse_args(argv).model)
    )
    for k, link in enumerate(links, start=1):
        print(f"request {k}: {link.model} forgot {', '.join(link.receipt['identities'])}")
        print(f"  guard: {guard_line(link.receipt.get('guard') or {})}")
    for path in missing:
        print(f"not found, not checked: portrait {path}")
    for line in moved:
        print(f"unsigned, differs (not a break): {line}")
    print("unsigned, not checked: each receipt's seconds.total (measured after its checkpoint was written)")
    people = forgotten(links)
    print(f"chain intact: {len(links)} request(s), {len(people)} people forgotten: {', '.join(people)}")

"""The 1-SHUI splits as pure functions (no torch): identity-disjoint TRAIN / VAL / TEST, the forget
request with one support image per forget identity, and the simulated requests of meta-training.

The :class:`Split` record is the single source of truth for who is where. It is serialised as JSON,
carries a fingerprint of the dataset listing it was made from and of everything in it, and refuses to
be used with another dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import MissingFileError, SettingError, UserError

SPLIT_FORMAT = 1
HOLDOUT_SHARE = 0.4  # VAL + TEST, in images
VAL_SHARE = 0.5  # of the holdout images
MIN_IMAGES = 2  # a forget identity needs a support image and at least one forget image
MIN_IMAGES_SINGLE = 6  # ... and more when the request is a single person


class SplitMismatchError(UserError, ValueError):
    """A Split is used with data, or a model, other than the one it was made for."""


@dataclass(frozen=True)
class Split:
    """Who is in TRAIN / VAL / TEST, who asks to be forgotten, and each one's support image."""

    dataset: str
    dataset_fingerprint: str
    seed: int
    request_size: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    forget: tuple[str, ...]
    support: dict[str, str] = field(hash=False)  # forget identity -> support image file
    format: int = SPLIT_FORMAT

    @property
    def identities(self) -> tuple[str, ...]:
        """Every identity of the dataset (the split partitions them all), sorted: an identity id is a
        position here, in the datamodule's batches and in a method's requests alike."""
        return tuple(sorted({*self.train, *self.val, *self.test}))

    @property
    def retain(self) -> tuple[str, ...]:
        forget = set(self.forget)
        return tuple(i for i in self.train if i not in forget)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the whole record (dataset listing, seed, N and every list)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {**asdict(self), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, record: dict, source: str = "split record") -> Split:
        if not isinstance(record, dict):
            raise SplitMismatchError(f"{source}: missing, or not a split record")
        record = dict(record)
        stated = record.pop("fingerprint", None)
        if record.get("format") != SPLIT_FORMAT:
            raise SplitMismatchError(
                f"{source}: split format {record.get('format')!r}, expected {SPLIT_FORMAT}"
            )
        try:
            split = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})
        except TypeError as err:
            raise SplitMismatchError(f"{source}: not a split record ({err})") from None
        if stated != split.fingerprint:
            raise SplitMismatchError(
                f"{source}: its content does not match its fingerprint (edited by hand?)"
            )
        return split

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON atomically (a temporary file renamed into place)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"split file {path} does not exist")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SplitMismatchError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(record, source=str(path))

    def verify(self, dataset: str, dataset_fingerprint: str, source: str = "the split") -> None:
        """Refuse to be used with a dataset other than the one this split was made from."""
        if (dataset, dataset_fingerprint) != (self.dataset, self.dataset_fingerprint):
            raise SplitMismatchError(
                f"{source} was made for dataset {self.dataset!r} "
                f"with listing {self.dataset_fingerprint[:12]}, "
                f"but the data given is {dataset!r} with listing {dataset_fingerprint[:12]}. Point the data "
                "root at the data the split was made from, or make a new split (and retrain on it)."
            )

    def require_same(
        self, other: Split, source: str, fix: str = "use the data settings it was made with"
    ) -> None:
        """Refuse ``other`` (the split of ``source``) unless it is this one; say what differs and the fix."""
        if other.fingerprint == self.fingerprint:
            return
        if (other.dataset, other.dataset_fingerprint) != (self.dataset, self.dataset_fingerprint):
            what = (
                f"dataset {other.dataset!r} (listing {other.dataset_fingerprint[:12]}), "
                f"but this run uses {self.dataset!r} (listing {self.dataset_fingerprint[:12]})"
            )
        else:
            what = (
                f"split {other.fingerprint[:12]} (seed {other.seed}, N {other.request_size}), "
                f"but this run uses split {self.fingerprint[:12]} (seed {self.seed}, N {self.request_size})"
            )
        raise SplitMismatchError(f"{source} was made with {what}; {fix}")


@dataclass(frozen=True)
class SimulatedRequest:
    """One simulated forget request of meta-training, as row indices into the dataset table."""

    identities: tuple[str, ...]
    support: tuple[int, ...]  # one image per identity
    forget: tuple[int, ...]  # the other images of those identities


def images_by_identity(identities: Sequence[str]) -> dict[str, list[int]]:
    """Row indices of each identity, in table order."""
    rows: dict[str, list[int]] = {}
    for row, identity in enumerate(identities):
        rows.setdefault(identity, []).append(row)
    return rows


def make_split(
    files: Sequence[str],
    identities: Sequence[str],
    *,
    dataset: str,
    dataset_fingerprint: str,
    seed: int,
    request_size: int,
) -> Split:
    """Identity-disjoint TRAIN / VAL / TEST (about 60/20/20 of the images) and a forget request of N."""
    if request_size < 1:
        raise SettingError(f"request size must be at least 1, got {request_size}; set data.request_size")
    rows = images_by_identity(identities)
    counts = {identity: len(r) for identity, r in rows.items()}
    if len(counts) < 4:
        raise SettingError(f"{dataset}: {len(counts)} identities; a split needs at least 4")

    order = sorted(counts)
    random.Random(f"1-SHUI/partition/{seed}").shuffle(order)
    cut = _cut(order, counts, HOLDOUT_SHARE)
    holdout, train = order[:cut], order[cut:]
    cut = _cut(holdout, counts, VAL_SHARE)
    val, test = holdout[:cut], holdout[cut:]

    rng = random.Random(f"1-SHUI/request/{seed}/{request_size}")
    forget = _forget_identities(train, counts, request_size, rng)
    support = {identity: files[rng.choice(rows[identity])] for identity in forget}
    return Split(
        dataset,
        dataset_fingerprint,
        seed,
        request_size,
        tuple(train),
        tuple(val),
        tuple(test),
        tuple(forget),
        support,
    )


def _cut(order: list[str], counts: dict[str, int], share: float) -> int:
    """Prefix length whose image count is closest to ``share`` of the images, walking from int(n * share)."""
    prefix = [0]
    for identity in order:
        prefix.append(prefix[-1] + counts[identity])
    target = share * prefix[-1]
    k = min(max(int(len(order) * share), 1), len(order) - 1)
    while k + 1 < len(order) and abs(prefix[k + 1] - target) < abs(prefix[k] - target):
        k += 1
    while k - 1 > 0 and abs(prefix[k - 1] - target) < abs(prefix[k] - target):
        k -= 1
    return k


def _forget_identities(train: list[str], counts: dict[str, int], n: int, rng: random.Random) -> list[str]:
    need = MIN_IMAGES_SINGLE if n == 1 else MIN_IMAGES
    order = list(train)
    rng.shuffle(order)
    eligible = [identity for identity in order if counts[identity] >= need]
    if len(eligible) < n or n >= len(train):
        raise SettingError(
            f"a request of {n} identities needs {n} TRAIN identities with at least {need} images and some "
            f"left to retain; TRAIN has {len(train)} identities, {len(eligible)} of them eligible: set "
            f"data.request_size to at most {min(len(eligible), len(train) - 1)}"
        )
    return eligible[:n]


def pools(split: Split, files: Sequence[str], identities: Sequence[str]) -> dict[str, list[int]]:
    """Row indices of every pool; the support images are in no training pool (train, retain, forget)."""
    support_files = set(split.support.values())
    member = {}
    for name in ("val", "test", "retain", "forget"):
        member.update(dict.fromkeys(getattr(split, name), name))
    out: dict[str, list[int]] = {name: [] for name in ("train", "retain", "forget", "support", "val", "test")}
    for row, (name, identity) in enumerate(zip(files, identities, strict=True)):
        pool = member.get(identity)
        if pool is None:
            continue  # an identity the split does not know cannot occur: the fingerprint was verified
        if pool == "forget" and name in support_files:
            out["support"].append(row)
            continue
        out[pool].append(row)
        if pool in ("retain", "forget"):
            out["train"].append(row)
    return out


def shadow_pool(split: Split) -> tuple[str, ...]:
    """The people a shadow model of the per-person attack (PROTOCOL §10) holds or leaves out: the forget
    people, whom the attack tells from the others, and TEST's, the people no evaluated model trained on;
    sorted. Every shadow holds the retain people too, as the pretrain and the retrain do, so that a
    shadow differs from them only in which of these people it trained on."""
    return tuple(sorted({*split.forget, *split.test}))


def shadow_half(split: Split, shadow: int) -> frozenset[str]:
    """The people of :func:`shadow_pool` that shadow ``shadow`` (0, 1, ...) trains on: shadows come in
    pairs, 2j taking a random half of the pool (drawn with the split seed and j) and 2j + 1 the other
    half, so that each person is in exactly K/2 of an even number K of shadows and out of the others,
    and adding shadows keeps the ones made."""
    people = list(shadow_pool(split))
    random.Random(f"1-SHUI/shadow/{split.seed}/{shadow // 2}").shuffle(people)
    half = people[: len(people) // 2] if shadow % 2 == 0 else people[len(people) // 2 :]
    return frozenset(half)


def shadow_rows(split: Split, files: Sequence[str], identities: Sequence[str], shadow: int) -> list[int]:
    """The rows shadow ``shadow`` trains on: the retain pool and the training photos of its half of
    :func:`shadow_pool` (a forget person's forget pool photos, as the pretrain's; a TEST person's
    photos), in table order."""
    rows, held = pools(split, files, identities), shadow_half(split, shadow)
    return sorted(
        rows["retain"] + [row for pool in ("forget", "test") for row in rows[pool] if identities[row] in held]
    )


def requests_of(split: Split, requests: int) -> list[tuple[str, ...]]:
    """The forget request cut into ``requests`` requests served one after another: consecutive slices of
    ``split.forget`` (in its order), of ``request_size / requests`` people each."""
    size = len(split.forget) // requests
    if requests < 1 or size * requests != len(split.forget):
        raise SettingError(
            f"the forget request of {len(split.forget)} people cannot be cut into {requests} requests of "
            "equal size; set data.requests to a divisor of data.request_size"
        )
    return [split.forget[k * size : (k + 1) * size] for k in range(requests)]


def sequential_pools(
    split: Split, files: Sequence[str], identities: Sequence[str], requests: int, request: int
) -> dict[str, list[int]]:
    """The pools after request ``request`` (1-based) of :func:`requests_of`: the people of requests 1 to
    ``request`` are forgotten (the forget pool), the others retained, as in a retrain without them;
    ``support`` holds the portraits of request ``request``. Train, VAL and TEST are :func:`pools`'."""
    served = requests_of(split, requests)
    if not 1 <= request <= requests:
        raise SettingError(f"data.request must be between 1 and data.requests ({requests}), not {request}")
    forgotten = {person for people in served[:request] for person in people}
    rows = pools(split, files, identities)
    retain, forget = [], []
    for row in sorted(rows["retain"] + rows["forget"]):
        (forget if identities[row] in forgotten else retain).append(row)
    support = [row for row in rows["support"] if identities[row] in served[request - 1]]
    return {**rows, "retain": retain, "forget": forget, "support": support}


def simulated_requests(
    split: Split,
    files: Sequence[str],
    identities: Sequence[str],
    *,
    size: int,
    epoch: int,
    seed: int | None = None,
) -> list[SimulatedRequest]:
    """Meta-training requests of one epoch: TRAIN identities shuffled and cut into chunks of ``size``,
    drawn with ``seed`` (default the split's) and the epoch.

    The last chunk wraps round to the start of the shuffled list. Pools exclude the real support
    images. An identity with a single image takes part (that image is its simulated support image, as in
    the published code); a request with no forget image at all has nothing to train on and is left out.
    """
    train_rows = pools(split, files, identities)["train"]
    rows = images_by_identity([identities[r] for r in train_rows])
    rows = {i: [train_rows[r] for r in rs] for i, rs in rows.items()}
    if not 1 <= size <= len(rows):
        raise SettingError(
            f"simulated request size {size} must be between 1 and the {len(rows)} TRAIN identities; "
            "set data.simulated_request_size"
        )
    rng = random.Random(f"1-SHUI/simulated/{split.seed if seed is None else seed}/{epoch}")
    order = sorted(rows)
    rng.shuffle(order)
    chunks = [order[start : start + size] for start in range(0, len(order), size)]
    chunks[-1] = chunks[-1] + order[: size - len(chunks[-1])]
    requests = []
    for chunk in chunks:
        picks = [rng.choice(rows[identity]) for identity in chunk]
        forget = tuple(
            r for identity, pick in zip(chunk, picks, strict=True) for r in rows[identity] if r != pick
        )
        if forget:
            requests.append(SimulatedRequest(tuple(chunk), tuple(picks), forget))
    return requests

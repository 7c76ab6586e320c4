"""The loss-based membership inference attack (MIA) of the 1-SHUI protocol.

One feature per sample, its loss. A random forest learns retain (member, 1) vs VAL (non-member, 0) and is
tested on forget (member) vs TEST (non-member): we report its AUC and the share of forget samples it
predicts non-member. Classes are balanced by subsampling, and the rule used is reported with the result.
:func:`published_loss_mia` is the published attack, for comparison with the paper's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score, roc_curve

ArrayLike = Any  # a 1-D numpy array, torch tensor or sequence of per-sample losses


@dataclass(frozen=True, eq=False)
class MIAResult:
    """The attack's AUC in [0, 1], the forget non-member share in %, its ROC curve and selection rule."""

    auc: float
    forget_non_member: float
    fpr: np.ndarray
    tpr: np.ndarray
    selection_rule: str

    def __eq__(self, other: object) -> bool:
        # The dataclass default would compare the arrays with ==, whose truth value is ambiguous.
        if not isinstance(other, MIAResult):
            return NotImplemented
        return (
            self.auc == other.auc
            and self.forget_non_member == other.forget_non_member
            and self.selection_rule == other.selection_rule
            and np.array_equal(self.fpr, other.fpr)
            and np.array_equal(self.tpr, other.tpr)
        )

    def to_dict(self) -> dict[str, float | str]:
        """The scalars and the selection rule, for logging (the ROC curve is left out)."""
        return {
            "mia_auc": self.auc,
            "mia_forget_non_member": self.forget_non_member,
            "mia_selection_rule": self.selection_rule,
        }


def _losses(values: ArrayLike, pool: str) -> np.ndarray:
    """A pool's losses as a float64 vector; raises naming the pool if empty, not 1-D or non-finite."""
    if hasattr(values, "detach"):
        # .double() first: numpy has no bfloat16, and losses may come from a mixed-precision run.
        values = values.detach().cpu().double().numpy()
    losses = np.asarray(values, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"loss_mia: {pool} losses must be 1-D, got shape {losses.shape}")
    if losses.size == 0:
        raise ValueError(f"loss_mia: {pool} losses are empty")
    if not np.isfinite(losses).all():
        bad = int((~np.isfinite(losses)).sum())
        raise ValueError(f"loss_mia: {pool} losses hold {bad} non-finite value(s)")
    return losses


def loss_mia(
    retain: ArrayLike,
    val: ArrayLike,
    forget: ArrayLike,
    test: ArrayLike,
    *,
    seed: int = 0,
    n_estimators: int = 100,
    min_samples_leaf: int = 5,
) -> MIAResult:
    """Run the loss-based MIA on per-sample losses of the four pools (each 1-D, non-empty, finite).

    Balancing: a ``numpy.random.default_rng(seed)`` draws, without replacement and in this order,
    min(len(retain), len(val)) losses from retain and from VAL to train the attack, then
    min(len(forget), len(test)) from forget and from TEST for the AUC and ROC curve.
    ``forget_non_member`` is over all forget losses: a sample is predicted non-member when its member
    probability is <= 0.5 (ties go to non-member, as ``RandomForestClassifier.predict`` does).

    Random forest, with defaults fixed in advance and never tuned on forget or TEST: ``n_estimators=100``
    trees; ``min_samples_leaf=5``, so that leaf probabilities average several losses instead of memorising
    single ones; otherwise scikit-learn's defaults (Gini, bootstrap, unlimited depth; with one feature there
    is no feature subsampling); ``random_state=seed`` and ``n_jobs=1`` for a deterministic result.
    """
    pools = {
        name: _losses(values, name)
        for name, values in (("retain", retain), ("val", val), ("forget", forget), ("test", test))
    }
    rng = np.random.default_rng(seed)

    def draw(name: str, k: int) -> np.ndarray:
        return rng.choice(pools[name], size=k, replace=False)

    n_train = min(len(pools["retain"]), len(pools["val"]))
    n_eval = min(len(pools["forget"]), len(pools["test"]))
    train_member, train_non = draw("retain", n_train), draw("val", n_train)
    eval_member, eval_non = draw("forget", n_eval), draw("test", n_eval)

    forest = RandomForestClassifier(
        n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, random_state=seed, n_jobs=1
    )
    forest.fit(
        np.concatenate([train_member, train_non])[:, None],
        np.concatenate([np.ones(n_train, dtype=int), np.zeros(n_train, dtype=int)]),
    )
    member_column = list(forest.classes_).index(1)

    def member_probability(losses: np.ndarray) -> np.ndarray:
        return forest.predict_proba(losses[:, None])[:, member_column]

    labels = np.concatenate([np.ones(n_eval, dtype=int), np.zeros(n_eval, dtype=int)])
    scores = member_probability(np.concatenate([eval_member, eval_non]))
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr.flags.writeable = tpr.flags.writeable = False  # the result is frozen; so are its curves
    forget_non_member = 100.0 * float(np.mean(member_probability(pools["forget"]) <= 0.5))

    counts = {name: len(losses) for name, losses in pools.items()}
    rule = (
        f"Classes balanced by drawing without replacement with numpy default_rng({seed}): "
        f"the attack trains on {n_train} retain (of {counts['retain']}) and {n_train} VAL "
        f"(of {counts['val']}) losses; the AUC uses {n_eval} forget (of {counts['forget']}) and "
        f"{n_eval} TEST (of {counts['test']}) losses; the forget non-member share is over all "
        f"{counts['forget']} forget losses (member probability <= 0.5)."
    )
    return MIAResult(
        auc=float(roc_auc_score(labels, scores)),
        forget_non_member=forget_non_member,
        fpr=fpr,
        tpr=tpr,
        selection_rule=rule,
    )


PUBLISHED_FORESTS = tuple((trees, criterion) for trees in (20, 50, 100) for criterion in ("gini", "entropy"))


def published_loss_mia(retain: ArrayLike, val: ArrayLike, forget: ArrayLike, test: ArrayLike) -> MIAResult:
    """The published attack (PROTOCOL §8): no class balancing; six forests ({20, 50, 100} trees x Gini or
    entropy, leaves of one sample, ``random_state=0``) trained on all retain vs all VAL losses; the one
    reported is the first with the highest share of forget samples called non-member, a choice made on
    the evaluated pools themselves (optimistic). As published, when no forest calls any forget sample
    non-member the AUC reported is 0."""
    pools = {
        name: _losses(values, name)
        for name, values in (("retain", retain), ("val", val), ("forget", forget), ("test", test))
    }
    train = np.concatenate([pools["retain"], pools["val"]])[:, None]
    train_labels = np.concatenate([np.ones(len(pools["retain"])), np.zeros(len(pools["val"]))]).astype(int)
    labels = np.concatenate([np.ones(len(pools["forget"])), np.zeros(len(pools["test"]))]).astype(int)
    evaluated = np.concatenate([pools["forget"], pools["test"]])[:, None]
    best = (
        0.0,
        0.0,
        np.zeros(1),
        np.zeros(1),
        "none",
    )  # share, AUC, ROC, forest: as the published loop starts
    for trees, criterion in PUBLISHED_FORESTS:
        forest = RandomForestClassifier(n_estimators=trees, criterion=criterion, random_state=0, n_jobs=1)
        forest.fit(train, train_labels)
        share = 100.0 * float(np.mean(forest.predict(pools["forget"][:, None]) == 0))
        if share > best[0]:
            scores = forest.predict_proba(evaluated)[:, list(forest.classes_).index(1)]
            fpr, tpr, _ = roc_curve(labels, scores)
            best = (share, float(roc_auc_score(labels, scores)), fpr, tpr, f"{trees} trees, {criterion}")
    share, auc, fpr, tpr, forest = best
    fpr.flags.writeable = tpr.flags.writeable = False
    rule = (
        "Published selection (not balanced): six forests trained on all retain and VAL losses; reported "
        f"the one ({forest}) calling the most forget samples non-member, chosen on the evaluated forget "
        "and TEST pools themselves (optimistic)."
    )
    return MIAResult(auc=auc, forget_non_member=share, fpr=fpr, tpr=tpr, selection_rule=rule)

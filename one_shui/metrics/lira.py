"""A likelihood-ratio attack on people (LiRA, Carlini et al., S&P 2022, applied to a person as a whole;
PROTOCOL §10): after a person asked to be forgotten, can an attacker still tell that they were trained on?

- **Score of a model on a person**: the mean over the person's photos of the logit-scaled confidence
  log(p / (1 - p)) of p, the probability the model gives to the photo's true label: its class, or its
  whole attribute vector (attributes as independent Bernoullis, as RMIA reads it,
  :func:`one_shui.metrics.rmia.true_label_probability`). The logit makes the confidence near Gaussian
  over models, which the ratio assumes (Carlini et al., §IV); the mean over photos is the person's, one
  number per person and model, since the attack is on the person and not on a photo.
- **Shadow models**, trained each with or without the person (``in`` / ``out``): a Gaussian fitted to the
  person's scores under each, its own mean and one deviation that the two share, pooled from the
  person's in and out scores about their means. Sharing it follows LiRA's "fixed variance" (one deviation
  for every example), which its authors found the stronger with few shadows (under 64; a bench has
  tens), kept per person here since people differ more than photos do; and it keeps the ratio rising
  with the score, so a model that holds the person beyond every "in" shadow reads as a member, where two
  deviations of their own could turn the ratio down again past them.
- The attack's score of an evaluated model on the person: the log ratio of the two densities at the
  model's score, log N(s; in) - log N(s; out); high when the model holds the person as the "in" shadows do.

Positives are the forgotten people, negatives people no evaluated model trained on (TEST's): the AUC over
people and the TPR at 1 % and 0.1 % FPR, each the highest TPR whose FPR is at most that (with fewer than
1000 negatives, 0.1 % FPR is an FPR of 0; with fewer than 100, so is 1 %: :attr:`LiRAResult.lowest_fpr`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

LOW_FPRS = (0.01, 0.001)  # the FPRs the TPR is reported at
MIN_SHADOWS = 2  # scores of a person with it in, and out, that a Gaussian is fitted to (a deviation needs 2)


def logit_confidence(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of each probability, p kept below 1 (a float64 p of 1 is the largest below it)."""
    p = np.minimum(np.asarray(probabilities, dtype=np.float64), np.nextafter(1.0, 0.0))
    return np.log(p) - np.log1p(-p)


def person_scores(probabilities: Sequence[float], people: Sequence[str]) -> dict[str, float]:
    """Each person's score: the mean logit confidence of their photos (``people``: each photo's person,
    in the order of ``probabilities``)."""
    if len(probabilities) != len(people):
        raise ValueError(f"lira: {len(probabilities)} probabilities for {len(people)} photos")
    logits, people = logit_confidence(probabilities), np.asarray(people)
    return {person: float(logits[people == person].mean()) for person in dict.fromkeys(people.tolist())}


@dataclass(frozen=True)
class Gaussians:
    """A person's shadow scores with them in training and out of it: each one's mean, and the deviation
    they share."""

    in_mean: float
    out_mean: float
    std: float

    @classmethod
    def fit(cls, held: Sequence[float], left_out: Sequence[float], person: str = "") -> Gaussians:
        if min(len(held), len(left_out)) < MIN_SHADOWS:
            raise ValueError(
                f"lira: person {person} is in {len(held)} and out of {len(left_out)} shadow models; each "
                f"Gaussian needs at least {MIN_SHADOWS}"
            )
        held, left_out = np.asarray(held, dtype=float), np.asarray(left_out, dtype=float)
        squares = ((held - held.mean()) ** 2).sum() + ((left_out - left_out.mean()) ** 2).sum()
        std = np.sqrt(squares / (held.size + left_out.size - 2))
        if not std > 0:
            raise ValueError(f"lira: every shadow gives person {person} the same score; nothing to fit")
        return cls(float(held.mean()), float(left_out.mean()), float(std))

    def log_ratio(self, score: float) -> float:
        """log N(score; in) - log N(score; out)."""
        return float(norm.logpdf(score, self.in_mean, self.std) - norm.logpdf(score, self.out_mean, self.std))


def fit_people(shadows: Sequence[tuple[Collection[str], Mapping[str, float]]]) -> dict[str, Gaussians]:
    """Each person's Gaussians from the ``shadows``: (the people a shadow trained on, its scores)."""
    people = dict.fromkeys(person for _, scores in shadows for person in scores)
    return {
        person: Gaussians.fit(
            [scores[person] for held, scores in shadows if person in held],
            [scores[person] for held, scores in shadows if person not in held],
            person,
        )
        for person in people
    }


def auc_of(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """The AUC of scores of positives (..., p) against negatives (..., n), each of a batch ``...``: the share
    of (positive, negative) pairs that the scores rank right, a tie counting half."""
    above, below = positives[..., :, None], negatives[..., None, :]
    return (above > below).mean((-2, -1)) + 0.5 * (above == below).mean((-2, -1))


def tpr_at(positives: np.ndarray, negatives: np.ndarray, low: float) -> np.ndarray:
    """The TPR in % at an FPR of at most ``low`` (as on the ROC curve: the highest TPR of a threshold
    whose FPR is at most ``low``): the share of positives above the negative that only floor(low x n) of
    the n negatives beat."""
    allowed = int(np.floor(low * negatives.shape[-1] + 1e-9))  # negatives that may lie above the threshold
    threshold = -np.sort(-negatives, axis=-1)[..., allowed]
    return 100.0 * (positives > threshold[..., None]).mean(-1)


@dataclass(frozen=True, eq=False)
class LiRAResult:
    """AUC over people in [0, 1]; TPR in % at each of :data:`LOW_FPRS`; each person's log ratio."""

    auc: float
    tpr_at: dict[float, float]
    lowest_fpr: float  # 1 / the negatives: the lowest FPR above 0 that they resolve
    ratios: dict[str, float]


def lira(
    scores: Mapping[str, float], gaussians: Mapping[str, Gaussians], positives: Sequence[str],
    negatives: Sequence[str],
) -> LiRAResult:  # fmt: skip
    """The attack on a model whose score on each person is ``scores``: ``positives`` (the forgotten
    people) against ``negatives`` (people it never trained on)."""
    if not positives or not negatives:
        raise ValueError("lira: the attack needs at least one positive and one negative person")
    ratios = {person: gaussians[person].log_ratio(scores[person]) for person in [*positives, *negatives]}
    held = np.array([ratios[person] for person in positives])
    never = np.array([ratios[person] for person in negatives])
    return LiRAResult(
        auc=float(auc_of(held, never)),
        tpr_at={low: float(tpr_at(held, never, low)) for low in LOW_FPRS},
        lowest_fpr=1 / len(negatives),
        ratios=ratios,
    )

"""EPIC-KITCHENS-100 recognition and anticipation metrics as an offline `evaluate.Metric`.

Definitions follow the official evaluation code:
  - recognition: epic-kitchens/C1-Action-Recognition, ``evaluate.py``, ``utils/metrics.py`` (``compute_metrics``)
    and ``utils/scoring.py`` (``compute_action_scores``);
  - anticipation: epic-kitchens/C3-Action-Anticipation, ``evaluate_anticipation_json_ek100.py``
    (``compute_anticipation_metrics``, ``mean_topk_recall``).

  * Actions are ranked from the verb and noun scores: the top-100 verbs and top-100 nouns are each turned into
    probabilities by a softmax over those 100 scores, and every pair is scored by the product (the official
    ``compute_action_scores(..., top_n=100)``). An action is the (verb, noun) pair itself (the official id is
    ``verb * 1000 + noun``), not an index of the 3,806-class table, so pairs outside the table still count.
  * "tail": verb metrics over rows whose verb is a tail verb, noun metrics over rows whose noun is a tail noun,
    action metrics over rows whose verb OR noun is tail (``tail_verb_bool_idx | tail_noun_bool_idx``).
  * "unseen": rows whose participant is in ``EPIC_100_unseen_participant_ids_<split>.csv``.
  * Tail and unseen report top-1 only, as the official tables.
  * mt5r (anticipation): top-5 recall of each class present among the (subset's) labels, averaged over those
    classes (``mean_topk_recall``).

Two deliberate differences, both documented in the README: ties are broken towards the lower class id (the
official scripts use ``argsort()[::-1]``, whose order among equal scores is unspecified), and pairs are ranked by
the float64 sum of their verb and noun logits, which orders them exactly as the product of the two softmax
probabilities but keeps mathematically equal products equal (float products differ in their last bits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from .annotations import ORACLE_QUESTIONS
from .vocabulary import EK100Vocabulary

__all__ = ["EK100Metric", "official_action_topk", "rank_topk"]

ACTION_TOP_N = 100
_SUBSETS = ("all", "tail", "unseen")
_TASKS = ("verb", "noun", "action")
_RULES = ("official", "independent")


def rank_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best class ids per row of (B, C) scores, best first; equal scores: the lower id first."""
    scores = np.asarray(scores, dtype=np.float64)
    k = min(k, scores.shape[1])
    # A stable sort of the negated scores keeps equal scores in id order.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def official_action_topk(
    verb_logits: np.ndarray, noun_logits: np.ndarray, k: int = 5, top_n: int = ACTION_TOP_N, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official EK100 action ranking, its k best (verb, noun) pairs per row.

    Args:
        verb_logits: (B, V) verb scores; noun_logits: (B, N) noun scores (logits; any monotone score works for the
            ranking, the returned probabilities assume logits).
        k: pairs to return (<= top_n ** 2); top_n: verbs / nouns kept before the product (100, official).

    Returns:
        ``(verbs, nouns, probs)``, each (B, k): pair ids and p(verb) * p(noun), with the softmax over the top_n
        scores of each. Order: probability descending, equal probabilities by lower (verb, noun).
    """
    verb_logits = np.asarray(verb_logits, dtype=np.float64)
    noun_logits = np.asarray(noun_logits, dtype=np.float64)
    batch = verb_logits.shape[0]
    top_v = min(top_n, verb_logits.shape[1])
    top_no = min(top_n, noun_logits.shape[1])
    k = min(k, top_v * top_no)
    out_v = np.empty((batch, k), dtype=np.int64)
    out_n = np.empty((batch, k), dtype=np.int64)
    out_p = np.empty((batch, k), dtype=np.float64)
    for lo in range(0, batch, chunk):
        v_scores, n_scores = verb_logits[lo : lo + chunk], noun_logits[lo : lo + chunk]
        rows = np.arange(v_scores.shape[0])[:, None]
        # The kept ids, re-sorted by id so that the flattened grid below is in (verb, noun) order.
        v_ids = np.sort(rank_topk(v_scores, top_v), axis=1)
        n_ids = np.sort(rank_topk(n_scores, top_no), axis=1)
        kept_v, kept_n = v_scores[rows, v_ids], n_scores[rows, n_ids]
        # p(v) * p(n) = exp(s_v + s_n) / (Z_v * Z_n): ranking by the logit sum is the same ranking, and the sum of
        # two float32 logits is exact in float64, so mathematically equal products tie exactly (the products
        # themselves differ in their last bits).
        grid = (kept_v[:, :, None] + kept_n[:, None, :]).reshape(len(v_ids), -1)
        best = _stable_topk(grid, k)
        best_v, best_n = best // top_no, best % top_no
        out_v[lo : lo + chunk] = v_ids[rows, best_v]
        out_n[lo : lo + chunk] = n_ids[rows, best_n]
        out_p[lo : lo + chunk] = _softmax(kept_v)[rows, best_v] * _softmax(kept_n)[rows, best_n]
    return out_v, out_n, out_p


def _stable_topk(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, ties towards the lower column (exact, without full sorts)."""
    if k >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    # Everything >= the k-th largest value is a candidate (more than k only when values tie at the boundary).
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1 : k]
    candidates = values >= kth
    counts = candidates.sum(axis=1)
    out = np.empty((values.shape[0], k), dtype=np.int64)
    plain = counts == k
    if plain.any():
        cols = np.nonzero(candidates[plain])[1].reshape(-1, k)  # ascending column order
        order = np.argsort(-np.take_along_axis(values[plain], cols, axis=1), axis=1, kind="stable")
        out[plain] = np.take_along_axis(cols, order, axis=1)
    for row in np.nonzero(~plain)[0]:
        cols = np.nonzero(candidates[row])[0]
        out[row] = cols[np.argsort(-values[row, cols], kind="stable")[:k]]
    return out


def _hits(ranked: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return (ranked[:, :k] == labels[:, None]).any(axis=1)


def _mean(hits: np.ndarray, mask: np.ndarray) -> float:
    return float(100.0 * hits[mask].mean()) if mask.any() else math.nan


def _class_mean_recall(hits: np.ndarray, classes: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the classes present in ``classes[mask]`` of the fraction of their rows that are hits."""
    if not mask.any():
        return math.nan
    present, inverse = np.unique(classes[mask], return_inverse=True)
    per_class = np.bincount(inverse, weights=hits[mask].astype(np.float64), minlength=len(present))
    per_class /= np.bincount(inverse, minlength=len(present))
    return float(100.0 * per_class.mean())


def compute_ek100_metrics(
    verb_logits: np.ndarray,
    noun_logits: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    participant_ids: Sequence[str] | None = None,
    *,
    vocab: EK100Vocabulary,
    split: str = "validation",
    task: str = "recognition",
    action_rule: str = "official",
) -> dict[str, Any]:
    """The EK100 metric table from arrays (the function behind :class:`EK100Metric`); percentages in 0-100."""
    if action_rule not in _RULES:
        raise ValueError(f"action_rule={action_rule!r}: expected one of {_RULES}")
    verb_logits = np.asarray(verb_logits, dtype=np.float64)
    noun_logits = np.asarray(noun_logits, dtype=np.float64)
    verb_labels = np.asarray(verb_labels, dtype=np.int64).reshape(-1)
    noun_labels = np.asarray(noun_labels, dtype=np.int64).reshape(-1)
    n = len(verb_labels)
    if n == 0:
        raise ValueError("EK100Metric: no examples to evaluate")
    expected = {"verb_logits": (n, vocab.num_verbs), "noun_logits": (n, vocab.num_nouns)}
    for name, array in (("verb_logits", verb_logits), ("noun_logits", noun_logits)):
        if array.shape != expected[name]:
            raise ValueError(f"{name}: shape {array.shape}, expected {expected[name]} (one row of class scores per example)")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: contains NaN or inf")
    if len(noun_labels) != n:
        raise ValueError(f"noun_labels: {len(noun_labels)} labels for {n} verb labels")
    for name, labels, size in (("verb_labels", verb_labels, vocab.num_verbs), ("noun_labels", noun_labels, vocab.num_nouns)):
        bad = (labels < 0) | (labels >= size)
        if bad.any():
            raise ValueError(f"{name}: class id {int(labels[bad][0])} outside 0..{size - 1}")

    verb_rank = rank_topk(verb_logits, 5)
    noun_rank = rank_topk(noun_logits, 5)
    act_v, act_n, _ = official_action_topk(verb_logits, noun_logits, k=5)
    hits: dict[str, dict[int, np.ndarray]] = {
        "verb": {k: _hits(verb_rank, verb_labels, k) for k in (1, 5)},
        "noun": {k: _hits(noun_rank, noun_labels, k) for k in (1, 5)},
    }
    official = {k: ((act_v[:, :k] == verb_labels[:, None]) & (act_n[:, :k] == noun_labels[:, None])).any(axis=1) for k in (1, 5)}
    independent = {k: hits["verb"][k] & hits["noun"][k] for k in (1, 5)}
    hits["action"] = official if action_rule == "official" else independent

    tail_verb = np.isin(verb_labels, sorted(vocab.tail_verbs))
    tail_noun = np.isin(noun_labels, sorted(vocab.tail_nouns))
    participants = np.asarray(list(participant_ids) if participant_ids is not None else [""] * n, dtype=object)
    unseen = np.isin(participants, sorted(vocab.unseen_participants.get(split, ())))
    everyone = np.ones(n, dtype=bool)
    masks = {
        "all": dict.fromkeys(_TASKS, everyone),
        "tail": {"verb": tail_verb, "noun": tail_noun, "action": tail_verb | tail_noun},
        "unseen": dict.fromkeys(_TASKS, unseen),
    }
    action_ids = verb_labels * 1000 + noun_labels  # the official action id
    classes = {"verb": verb_labels, "noun": noun_labels, "action": action_ids}

    results: dict[str, Any] = {}
    for subset in _SUBSETS:
        for name in _TASKS:
            mask = masks[subset][name]
            for k in (1, 5) if subset == "all" else (1,):
                results[f"{subset}_{name}_top{k}"] = _mean(hits[name][k], mask)
    if task == "anticipation":
        for subset in _SUBSETS:
            for name in _TASKS:
                results[f"{subset}_{name}_mt5r"] = _class_mean_recall(hits[name][5], classes[name], masks[subset][name])
    if action_rule == "official":
        # The authors' lenient rule (verb in top-k and noun in top-k), reported beside the official numbers.
        for subset in _SUBSETS:
            mask = masks[subset]["action"]
            for k in (1, 5) if subset == "all" else (1,):
                results[f"{subset}_action_top{k}_independent"] = _mean(independent[k], mask)
            if task == "anticipation":
                results[f"{subset}_action_mt5r_independent"] = _class_mean_recall(independent[5], action_ids, mask)
    results.update(
        action_rule=action_rule,
        num_examples=n,
        num_unseen=int(unseen.sum()),
        num_tail_verb=int(tail_verb.sum()),
        num_tail_noun=int(tail_noun.sum()),
        num_tail_action=int((tail_verb | tail_noun).sum()),
    )
    return results


_DESCRIPTION = """\
EPIC-KITCHENS-100 action recognition / anticipation metrics, computed offline as the official evaluation code
does (C1-Action-Recognition, C3-Action-Anticipation): verb, noun and action top-1 / top-5 accuracy over all
segments, top-1 over tail classes and unseen participants, and (anticipation) class-mean top-5 recall.
"""

_KWARGS_DESCRIPTION = """
Args:
    verb_logits: (N, 97) verb scores. noun_logits: (N, 300) noun scores.
    verb_labels, noun_labels: (N,) ground-truth class ids.
    narration_ids: optional (N,) narration ids; participants are read from them (``P01_11_0`` -> ``P01``) when
        ``participant_ids`` is not given.
    participant_ids: optional (N,) participant ids for the "unseen" subset.
    action_rule: "official" (joint top-100 x top-100 ranking; the independent rule is added as
        ``*_independent`` keys) or "independent" (verb in top-k and noun in top-k).
    observation_clipped: optional (N,) bools or a count: anticipation windows clipped at 0 s
        (``num_clipped_windows`` in the output).
Returns:
    ``{all,tail,unseen}_{verb,noun,action}_top1``, ``all_{verb,noun,action}_top5`` (percent, NaN for an empty
    subset), for anticipation ``{all,tail,unseen}_{verb,noun,action}_mt5r``, and example counts.
"""

_CITATION = """\
@article{Damen2022RESCALING,
  title={Rescaling Egocentric Vision: Collection, Pipeline and Challenges for EPIC-KITCHENS-100},
  author={Damen, Dima and Doughty, Hazel and Farinella, Giovanni Maria and Furnari, Antonino and Ma, Jian and
          Kazakos, Evangelos and Moltisanti, Davide and Munro, Jonathan and Perrett, Toby and Price, Will and
          Wray, Michael},
  journal={International Journal of Computer Vision (IJCV)},
  year={2022}
}
"""


class EK100Metric(evaluate.Metric):
    """EK100 metrics as an `evaluate.Metric` (no Hub download; works across processes like any evaluate metric).

    ``question_source`` (how the model's questions were made) is echoed in the results; ``"oracle"`` adds
    ``"label": "ORACLE QUESTIONS"``, which every table made from them must show.

    Example::

        metric = EK100Metric()                       # or EK100Metric(task="anticipation")
        metric.add_batch(verb_logits=v, noun_logits=n, verb_labels=vl, noun_labels=nl, narration_ids=ids)
        results = metric.compute()                   # {"all_verb_top1": ..., ...}
    """

    def __init__(
        self,
        task: str = "recognition",
        *,
        split: str = "validation",
        vocab: EK100Vocabulary | None = None,
        question_source: str | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in ("recognition", "anticipation"):
            raise ValueError(f"task={task!r}: expected 'recognition' or 'anticipation'")
        self.task = task
        self.question_source = question_source
        self.split = split
        self.vocab = vocab or EK100Vocabulary.default()
        kwargs.setdefault("config_name", task)
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "verb_logits": datasets.Sequence(datasets.Value("float64")),
                    "noun_logits": datasets.Sequence(datasets.Value("float64")),
                    "verb_labels": datasets.Value("int64"),
                    "noun_labels": datasets.Value("int64"),
                    "narration_ids": datasets.Value("string"),
                    "participant_ids": datasets.Value("string"),
                }
            ),
            reference_urls=[
                "https://github.com/epic-kitchens/C1-Action-Recognition",
                "https://github.com/epic-kitchens/C3-Action-Anticipation",
            ],
        )

    @staticmethod
    def _columns(
        verb_logits: Any, noun_logits: Any, verb_labels: Any, noun_labels: Any, narration_ids: Any, participant_ids: Any
    ) -> dict[str, Any]:
        verb_logits = _to_numpy(verb_logits)
        n = len(verb_logits)
        return {
            "verb_logits": verb_logits,
            "noun_logits": _to_numpy(noun_logits),
            "verb_labels": _to_numpy(verb_labels).reshape(-1),
            "noun_labels": _to_numpy(noun_labels).reshape(-1),
            # evaluate needs every feature in every batch: "" stands for "not given".
            "narration_ids": [""] * n if narration_ids is None else [str(x) for x in narration_ids],
            "participant_ids": [""] * n if participant_ids is None else [str(x) for x in participant_ids],
        }

    def add_batch(
        self,
        *,
        verb_logits: Any = None,
        noun_logits: Any = None,
        verb_labels: Any = None,
        noun_labels: Any = None,
        narration_ids: Any = None,
        participant_ids: Any = None,
        **kwargs: Any,
    ) -> None:
        """Add a batch: (B, 97) / (B, 300) logits (numpy, torch or lists), (B,) labels, optional ids."""
        columns = self._columns(verb_logits, noun_logits, verb_labels, noun_labels, narration_ids, participant_ids)
        super().add_batch(**columns, **kwargs)

    def compute(
        self,
        *,
        verb_logits: Any = None,
        noun_logits: Any = None,
        verb_labels: Any = None,
        noun_labels: Any = None,
        narration_ids: Any = None,
        participant_ids: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Compute over everything added (plus the arrays given here). See the class docstring for the keys."""
        if verb_logits is not None:
            columns = self._columns(verb_logits, noun_logits, verb_labels, noun_labels, narration_ids, participant_ids)
            return super().compute(**columns, **kwargs)
        return super().compute(**kwargs)

    def _compute(
        self,
        verb_logits: Any,
        noun_logits: Any,
        verb_labels: Any,
        noun_labels: Any,
        narration_ids: Any,
        participant_ids: Any,
        action_rule: str = "official",
        observation_clipped: Any = None,
    ) -> dict[str, Any]:
        participants = [
            p if p else (nid.split("_", 1)[0] if nid else "") for p, nid in zip(participant_ids, narration_ids)
        ]
        results = compute_ek100_metrics(
            np.asarray(verb_logits, dtype=np.float64),
            np.asarray(noun_logits, dtype=np.float64),
            verb_labels,
            noun_labels,
            participants,
            vocab=self.vocab,
            split=self.split,
            task=self.task,
            action_rule=action_rule,
        )
        if self.question_source is not None:
            results["question_source"] = self.question_source
            if self.question_source == "oracle":
                results["label"] = ORACLE_QUESTIONS
        if observation_clipped is not None:
            clipped = observation_clipped
            results["num_clipped_windows"] = int(clipped if np.ndim(clipped) == 0 else np.asarray(clipped).sum())
        return results


def _to_numpy(x: Any) -> np.ndarray:
    if x is None:
        raise ValueError("EK100Metric: verb_logits, noun_logits, verb_labels and noun_labels are required")
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)

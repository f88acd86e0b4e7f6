import decimal
import math

import numpy as np
import pytest
import torch

from modeling_mambavl.ek100 import EK100Metric, EK100Vocabulary
from modeling_mambavl.ek100.metric import official_action_topk, rank_action_pairs, rank_topk

V, N, BASE = 97, 300, -20.0


def _row(size: int, values: dict[int, float]) -> np.ndarray:
    row = np.full(size, BASE)
    for k, v in values.items():
        row[k] = v
    return row


# Six crafted clips (verb label, noun label, participant, verb scores, noun scores). Tail verbs of the official
# list include 14; tail nouns include 59 and 65; unseen validation participants are P18 and P32.
CLIPS = [
    # A: everything right.
    (0, 2, "P01", {0: 5, 1: 3}, {2: 4, 3: 1}),
    # B: a verb tie (1 and 3 equal): the lower id wins, so verb and action top-1 are wrong, top-5 right. Unseen.
    (3, 5, "P18", {1: 2, 3: 2}, {5: 3}),
    # C: (take, heat) = (0, 65) is not one of the 3,806 actions; it is the official top-1 (and the label), while
    # the closed-vocabulary argmax is (take, plate). Tail noun.
    (0, 65, "P01", {0: 6}, {65: 6, 2: 5.5}),
    # D: verb and noun each 5th: "both in top-5" holds, the joint top-5 does not. Tail verb, unseen.
    (14, 24, "P32", {10: 5, 11: 4.9, 12: 4.8, 13: 4.7, 14: 4.6}, {20: 5, 21: 4.9, 22: 4.8, 23: 4.7, 24: 4.6}),
    # E: verb 2nd, noun 1st: action 2nd in the joint ranking. Tail noun.
    (7, 59, "P01", {6: 3, 7: 2.5}, {59: 3}),
    # F: the verb is ranked last.
    (11, 57, "P01", {0: 3, 1: 2.9, 2: 2.8, 3: 2.7, 4: 2.6, 11: -30}, {57: 1}),
]

# Golden values, worked out by hand from the clips above (percent).
GOLDEN = {
    "all_verb_top1": 100 * 2 / 6,  # A C
    "all_verb_top5": 100 * 5 / 6,  # all but F
    "all_noun_top1": 100 * 5 / 6,  # all but D
    "all_noun_top5": 100.0,
    "all_action_top1": 100 * 2 / 6,  # A C
    "all_action_top5": 100 * 4 / 6,  # A B C E
    "tail_verb_top1": 0.0,  # {D}
    "tail_noun_top1": 100.0,  # {C, E}
    "tail_action_top1": 100 * 1 / 3,  # {C, D, E}: C
    "unseen_verb_top1": 0.0,  # {B, D}
    "unseen_noun_top1": 50.0,  # B
    "unseen_action_top1": 0.0,
    "all_action_top1_independent": 100 * 2 / 6,
    "all_action_top5_independent": 100 * 5 / 6,  # D counts under the lenient rule
    "tail_action_top1_independent": 100 * 1 / 3,
    "unseen_action_top1_independent": 0.0,
}
GOLDEN_MT5R = {
    "all_verb_mt5r": 80.0,  # classes 0 (A, C), 3, 14, 7 recalled; 11 not: 4 / 5 (instance top-5: 5 / 6)
    "all_noun_mt5r": 100.0,
    "all_action_mt5r": 100 * 4 / 6,
    "tail_verb_mt5r": 100.0,
    "tail_noun_mt5r": 100.0,
    "tail_action_mt5r": 100 * 2 / 3,  # C, E of {C, D, E}
    "unseen_verb_mt5r": 100.0,
    "unseen_noun_mt5r": 100.0,
    "unseen_action_mt5r": 50.0,
    "all_action_mt5r_independent": 100 * 5 / 6,
    "tail_action_mt5r_independent": 100.0,
    "unseen_action_mt5r_independent": 100.0,
}


def _inputs():
    verb_logits = np.stack([_row(V, c[3]) for c in CLIPS])
    noun_logits = np.stack([_row(N, c[4]) for c in CLIPS])
    verb_labels = np.array([c[0] for c in CLIPS])
    noun_labels = np.array([c[1] for c in CLIPS])
    narration_ids = [f"{c[2]}_01_{i}" for i, c in enumerate(CLIPS)]
    return verb_logits, noun_logits, verb_labels, noun_labels, narration_ids


def test_crafted_inputs_match_golden_values(tmp_path):
    verb_logits, noun_logits, verb_labels, noun_labels, ids = _inputs()
    results = EK100Metric(cache_dir=str(tmp_path)).compute(
        verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels, narration_ids=ids
    )
    for key, value in GOLDEN.items():
        assert results[key] == pytest.approx(value, abs=1e-9), key
    assert not any(key.endswith("mt5r") for key in results)
    assert (results["num_examples"], results["num_unseen"], results["num_tail_action"]) == (6, 2, 3)

    results = EK100Metric("anticipation", keep_in_memory=True).compute(
        verb_logits=verb_logits,
        noun_logits=noun_logits,
        verb_labels=verb_labels,
        noun_labels=noun_labels,
        participant_ids=[c[2] for c in CLIPS],
        observation_clipped=[True, False, False, True, False, False],
    )
    for key, value in {**GOLDEN, **GOLDEN_MT5R}.items():
        assert results[key] == pytest.approx(value, abs=1e-9), key
    assert results["num_clipped_windows"] == 2
    results = EK100Metric(keep_in_memory=True, question_source="oracle").compute(
        verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels
    )
    assert results["label"] == "ORACLE QUESTIONS" and results["question_source"] == "oracle"


def test_crafted_cases_are_what_they_claim():
    vocab = EK100Vocabulary.default()
    verb_logits, noun_logits, *_ = _inputs()
    v, n, _ = official_action_topk(verb_logits, noun_logits, k=5)
    assert (v[1, 0], n[1, 0]) == (1, 5)  # the tie went to the lower verb id
    assert (v[2, 0], n[2, 0]) == (0, 65) and not vocab.has_action(0, 65)
    # The closed-vocabulary ranking (log-softmax sums over the 3,806 table pairs) puts (take, plate) first.
    log_v = verb_logits[2] - np.logaddexp.reduce(verb_logits[2])
    log_n = noun_logits[2] - np.logaddexp.reduce(noun_logits[2])
    closed = max(range(vocab.num_actions), key=lambda a: log_v[vocab.actions[a][0]] + log_n[vocab.actions[a][1]])
    assert vocab.actions[closed] == (0, 2)
    assert (14, 24) not in set(zip(v[3], n[3]))  # D: both in top-5, pair not in the joint top-5


def test_independent_rule_and_batches_and_tensors():
    verb_logits, noun_logits, verb_labels, noun_labels, ids = _inputs()
    metric = EK100Metric(keep_in_memory=True)
    for lo, hi in ((0, 4), (4, 6)):
        metric.add_batch(
            verb_logits=torch.from_numpy(verb_logits[lo:hi]),
            noun_logits=torch.from_numpy(noun_logits[lo:hi]),
            verb_labels=torch.from_numpy(verb_labels[lo:hi]),
            noun_labels=noun_labels[lo:hi].tolist(),
            narration_ids=ids[lo:hi],
        )
    results = metric.compute(action_rule="independent")
    assert results["all_action_top5"] == pytest.approx(GOLDEN["all_action_top5_independent"])
    assert results["tail_action_top1"] == pytest.approx(GOLDEN["tail_action_top1_independent"])
    assert results["all_verb_top1"] == pytest.approx(GOLDEN["all_verb_top1"])
    assert not any(key.endswith("_independent") for key in results)


def test_empty_subset_is_nan_and_bad_inputs_are_named():
    verb_logits, noun_logits, verb_labels, noun_labels, _ = _inputs()
    results = EK100Metric(keep_in_memory=True).compute(
        verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels
    )
    assert math.isnan(results["unseen_verb_top1"]) and results["num_unseen"] == 0
    with pytest.raises(ValueError, match=r"verb_logits: shape \(6, 96\)"):
        EK100Metric(keep_in_memory=True).compute(
            verb_logits=verb_logits[:, :96], noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels
        )
    with pytest.raises(ValueError, match="action_rule"):
        EK100Metric(keep_in_memory=True).compute(
            verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels,
            action_rule="lenient",
        )
    with pytest.raises(ValueError, match="task="):
        EK100Metric("detection")


# ---------------------------------------------------------------------------------------------- brute force
def _order(scores, ids):
    return sorted(ids, key=lambda c: (-scores[c], c))


def _softmax(values):
    m = max(values)
    e = [math.exp(x - m) for x in values]
    s = sum(e)
    return [x / s for x in e]


def _joint_ranking(verb_scores, noun_scores, top_v, top_n):
    """All (verb, noun) pairs of the kept ids by p(verb) * p(noun), computed to 50 digits (ties stay ties)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        ev = {a: decimal.Decimal(float(verb_scores[a])).exp() for a in top_v}
        en = {b: decimal.Decimal(float(noun_scores[b])).exp() for b in top_n}
        zv, zn = sum(ev.values()), sum(en.values())
        products = {(a, b): (ev[a] / zv) * (en[b] / zn) for a in top_v for b in top_n}
        # Equal mathematical products can differ in the last of 50 digits: compare at 40.
        key = {pair: +p.quantize(decimal.Decimal(1).scaleb(p.adjusted() - 40)) for pair, p in products.items()}
    return sorted(products, key=lambda pair: (-key[pair], pair)), products


def _brute_force(verb_logits, noun_logits, verb_labels, noun_labels, participants, vocab, task, rankings=None):
    """The metric table from per-row rankings: the lower-id rule's (worked out here), or ``rankings`` = (top-5 verbs,
    top-5 nouns, top-5 (verb, noun) pairs) per row."""
    n = len(verb_labels)
    rows = []
    for i in range(n):
        if rankings is None:
            vr = _order(verb_logits[i], range(V))
            nr = _order(noun_logits[i], range(N))
            joint = _joint_ranking(verb_logits[i], noun_logits[i], vr[:100], nr[:100])[0][:5]
        else:
            vr, nr, joint = (list(r[i]) for r in rankings)
        gv, gn = int(verb_labels[i]), int(noun_labels[i])
        rows.append(
            {
                "verb": {k: gv in vr[:k] for k in (1, 5)},
                "noun": {k: gn in nr[:k] for k in (1, 5)},
                "official": {k: (gv, gn) in joint[:k] for k in (1, 5)},
                "independent": {k: gv in vr[:k] and gn in nr[:k] for k in (1, 5)},
                "classes": {"verb": gv, "noun": gn, "official": (gv, gn), "independent": (gv, gn)},
                "tail": {"verb": gv in vocab.tail_verbs, "noun": gn in vocab.tail_nouns},
                "unseen": participants[i] in vocab.unseen_participants["validation"],
            }
        )

    def mean(values):
        return 100.0 * sum(values) / len(values) if values else math.nan

    def member(row, subset, task_name):
        if subset == "all":
            return True
        if subset == "unseen":
            return row["unseen"]
        if task_name in ("verb", "noun"):
            return row["tail"][task_name]
        return row["tail"]["verb"] or row["tail"]["noun"]

    out = {}
    for subset in ("all", "tail", "unseen"):
        for name in ("verb", "noun", "official", "independent"):
            chosen = [r for r in rows if member(r, subset, name)]
            key = "action" if name in ("official", "independent") else name
            suffix = "_independent" if name == "independent" else ""
            for k in (1, 5) if subset == "all" else (1,):
                out[f"{subset}_{key}_top{k}{suffix}"] = mean([r[name][k] for r in chosen])
            if task == "anticipation":
                per_class = {}
                for r in chosen:
                    per_class.setdefault(r["classes"][name], []).append(r[name][5])
                recalls = [sum(h) / len(h) for h in per_class.values()]
                out[f"{subset}_{key}_mt5r{suffix}"] = 100.0 * sum(recalls) / len(recalls) if recalls else math.nan
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_random_inputs_agree_with_brute_force(seed):
    vocab = EK100Vocabulary.default()
    rng = np.random.default_rng(seed)
    n = 48
    verb_labels = rng.integers(0, V, n)
    noun_labels = rng.integers(0, N, n)
    # Few verb/noun classes, boosted labels and occasional exact ties make hits, misses and repeats all common.
    verb_labels[: n // 2] = rng.integers(0, 6, n // 2)
    noun_labels[: n // 2] = rng.choice([0, 1, 56, 59, 61, 2], n // 2)
    # Multiples of 1/4: sums are exact, so equal verb, noun and pair scores (ties) are frequent.
    verb_logits = np.round(rng.normal(size=(n, V)) * 4) / 4
    noun_logits = np.round(rng.normal(size=(n, N)) * 4) / 4
    verb_logits[np.arange(n), verb_labels] += rng.integers(0, 12, n) / 4
    noun_logits[np.arange(n), noun_labels] += rng.integers(0, 12, n) / 4
    participants = list(rng.choice(["P01", "P18", "P32", "P05"], n))
    expected = _brute_force(verb_logits, noun_logits, verb_labels, noun_labels, participants, vocab, "anticipation")
    results = EK100Metric("anticipation", keep_in_memory=True).compute(
        verb_logits=verb_logits,
        noun_logits=noun_logits,
        verb_labels=verb_labels,
        noun_labels=noun_labels,
        participant_ids=participants,
    )
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(results[key]), key
        else:
            assert results[key] == pytest.approx(value, abs=1e-9), key
    assert len(expected) == 28  # every top-k, mt5r and independent key was checked


def test_official_action_topk_matches_full_sort():
    rng = np.random.default_rng(3)
    verb_logits = np.round(rng.normal(size=(5, V)) * 4) / 4  # multiples of 1/4: many equal products
    noun_logits = np.round(rng.normal(size=(5, N)) * 4) / 4
    v, n, p = official_action_topk(verb_logits, noun_logits, k=100)
    ties = 0
    for i in range(5):
        vr = _order(verb_logits[i], range(V))[:100]
        nr = _order(noun_logits[i], range(N))[:100]
        ranking, products = _joint_ranking(verb_logits[i], noun_logits[i], vr, nr)
        assert ranking[:100] == list(zip(v[i].tolist(), n[i].tolist()))
        assert np.allclose([float(products[pair]) for pair in ranking[:100]], p[i], rtol=1e-12)
        ties += len(ranking[:100]) - len({verb_logits[i][a] + noun_logits[i][b] for a, b in ranking[:100]})
    assert ties > 50  # the case that needs the lower-id rule really occurs


# ---------------------------------------------------------------------------------------------- equal scores
def _official_rankings(verb_logits, noun_logits, softmax_over):
    """Top-5 verbs, nouns and pairs per row, computed step by step as the official code does: numpy's default
    argsort reversed over the scores (C1 / C3 ``top_scores``, ``_scores_array_to_ranks``), softmax of the 100 best
    scores (C3: per row; C1: scipy's softmax without an axis, over the whole array), products of every (verb, noun)
    pair, argsort reversed over the flattened product matrix keeping 100 pairs (``compute_action_scores``), and
    argsort reversed again over those 100 scores, one row at a time (``_scores_dict_to_ranks``)."""
    def top_scores(scores):
        ids = np.argsort(scores)[:, ::-1][:, :100]
        return ids, scores[np.arange(len(scores)).reshape(-1, 1), ids]

    def softmax(x):
        axis = 1 if softmax_over == "rows" else None
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    (verb_ids, verb_top), (noun_ids, noun_top) = top_scores(verb_logits), top_scores(noun_logits)
    matrix = (softmax(verb_top)[:, :, None] * softmax(noun_top)[:, None, :]).reshape(len(verb_logits), -1)
    kept = matrix.argsort(axis=-1)[:, ::-1][:, :100]
    pairs = []
    for row in range(len(matrix)):
        scores = matrix[row, kept[row]]
        cells = kept[row][np.argsort(scores)[::-1]][:5]
        width = noun_ids.shape[1]
        pairs.append([(int(verb_ids[row, c // width]), int(noun_ids[row, c % width])) for c in cells])
    return verb_logits.argsort(axis=-1)[:, ::-1][:, :5], noun_logits.argsort(axis=-1)[:, ::-1][:, :5], pairs


def _tied_inputs(seed, n=96):
    """A third of the rows in steps of 1/2 over a narrow range (equal verb, noun and pair scores at the top, and the
    label among them), a third in steps of 1/16 (as bf16 logits), a third continuous."""
    rng = np.random.default_rng(seed)
    third = n // 3
    verb_logits, noun_logits = rng.normal(size=(n, V)) * 2, rng.normal(size=(n, N)) * 2
    verb_logits[:third], noun_logits[:third] = rng.integers(0, 4, (third, V)) / 2, rng.integers(0, 4, (third, N)) / 2
    verb_logits[third : 2 * third] = np.round(verb_logits[third : 2 * third] * 16) / 16
    noun_logits[third : 2 * third] = np.round(noun_logits[third : 2 * third] * 16) / 16
    verb_labels = np.where(rng.random(n) < 0.7, verb_logits.argmax(1), rng.integers(0, V, n))
    noun_labels = np.where(rng.random(n) < 0.7, noun_logits.argmax(1), rng.integers(0, N, n))
    # In the first third the label shares the top score with other classes, so the tie decides top-1.
    rows = np.arange(third)
    verb_logits[rows, verb_labels[:third]] = verb_logits[:third].max(1)
    noun_logits[rows, noun_labels[:third]] = noun_logits[:third].max(1)
    participants = list(rng.choice(["P01", "P18", "P32", "P05"], n))
    return verb_logits, noun_logits, verb_labels, noun_labels, participants


@pytest.mark.parametrize("task", ["recognition", "anticipation"])
def test_official_ties_reproduce_the_official_order_and_differ_from_lower_id(task):
    vocab = EK100Vocabulary.default()
    verb_logits, noun_logits, verb_labels, noun_labels, participants = _tied_inputs(4 if task == "recognition" else 5)
    over = "array" if task == "recognition" else "rows"
    rankings = _official_rankings(verb_logits, noun_logits, over)
    # The rankings themselves.
    assert np.array_equal(rank_topk(verb_logits, 5, "official"), rankings[0])
    assert np.array_equal(rank_topk(noun_logits, 5, "official"), rankings[1])
    v, n = rank_action_pairs(verb_logits, noun_logits, 5, "official", softmax_over=over)
    assert [list(zip(a, b)) for a, b in zip(v.tolist(), n.tolist())] == rankings[2]
    # Every metric key.
    inputs = dict(verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels,
                  participant_ids=participants)
    official = EK100Metric(task, ties="official", keep_in_memory=True).compute(**inputs)
    lower_id = EK100Metric(task, keep_in_memory=True).compute(**inputs)
    expected = _brute_force(*inputs.values(), vocab, "anticipation", rankings=rankings)
    for key, value in expected.items():
        if key in official:
            assert official[key] == pytest.approx(value, abs=1e-9), key
    assert sum(key in official for key in expected) == (28 if task == "anticipation" else 16)
    # The rules do disagree on these inputs, top-1 included (the lower-id rule against a brute force under ties:
    # test_random_inputs_agree_with_brute_force).
    changed = [key for key in expected if key in official and official[key] != lower_id[key]]
    assert {"all_verb_top1", "all_noun_top1", "all_action_top1"} <= set(changed), changed


def test_ties_direction_and_argument():
    scores = np.zeros((1, V))
    scores[0, [3, 50]] = 1.0  # two classes share the best score
    assert rank_topk(scores, 2).tolist() == [[3, 50]]
    assert rank_topk(scores, 2, "official").tolist() == [np.argsort(scores[0])[::-1][:2].tolist()]
    with pytest.raises(ValueError, match="ties='random'"):
        EK100Metric(ties="random")
    with pytest.raises(ValueError, match="softmax_over"):
        rank_action_pairs(scores, np.zeros((1, N)), ties="official", softmax_over="columns")


@pytest.mark.parametrize("seed", [0, 1])
def test_action_ranking_shortcut_equals_the_whole_grid(seed):
    """The metric's top-5 pairs (searched near the best verbs and nouns) are the whole 100 x 100 grid's."""
    rng = np.random.default_rng(seed)
    cases = [
        (rng.integers(0, 4, size=(300, V)) / 2, rng.integers(0, 4, size=(300, N)) / 2),  # ties everywhere
        (rng.normal(size=(300, V)).astype(np.float32), rng.normal(size=(300, N)).astype(np.float32)),
        (np.round(rng.normal(size=(300, V)) * 16) / 16, np.round(rng.normal(size=(300, N)) * 16) / 16),
    ]
    for verb_logits, noun_logits in cases:
        v, n, _ = official_action_topk(verb_logits, noun_logits, k=100)  # k this large ranks the whole grid
        for k in (1, 5):
            fast_v, fast_n = rank_action_pairs(verb_logits, noun_logits, k)
            assert np.array_equal(fast_v, v[:, :k]) and np.array_equal(fast_n, n[:, :k])


def test_one_example_at_a_time_and_stored_scores_are_exact():
    verb_logits, noun_logits, verb_labels, noun_labels, ids = _inputs()
    # Scores whose float64 bytes end in zeros, and ones that need all 64 bits.
    verb_logits[:, 7] = [0.0, -0.0, 0.25, 1e-300, np.nextafter(1.0, 2.0), -20.0]
    batch = EK100Metric(keep_in_memory=True).compute(
        verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels,
        narration_ids=ids,
    )
    metric = EK100Metric(keep_in_memory=True)
    for i in range(len(ids)):
        metric.add(verb_logits=torch.from_numpy(verb_logits[i]), noun_logits=noun_logits[i],
                   verb_labels=int(verb_labels[i]), noun_labels=noun_labels[i], narration_ids=ids[i])
    assert metric.compute() == batch
    with pytest.raises(ValueError, match=r"noun_logits: shape \(1, 299\), expected \(1, 300\)"):
        EK100Metric(keep_in_memory=True).add(verb_logits=verb_logits[0], noun_logits=noun_logits[0, :299],
                                             verb_labels=0, noun_labels=0)


def test_official_ties_make_products_as_c1_for_recognition_and_c3_for_anticipation():
    """Mathematically equal products of different pairs differ in their last bits, and how depends on the softmax:
    C1 takes it over the whole array, C3 per row. Labels are C1's best pairs; C3's order misses some of them."""
    rng = np.random.default_rng(6)
    verb_logits = np.round(rng.normal(size=(100, V)) * 8) / 4
    noun_logits = np.round(rng.normal(size=(100, N)) * 8) / 4
    c1 = _official_rankings(verb_logits, noun_logits, "array")[2]
    c3 = _official_rankings(verb_logits, noun_logits, "rows")[2]
    labels = np.array([pairs[0] for pairs in c1])
    c3_hits = sum(pairs[0] == tuple(label) for pairs, label in zip(c3, labels.tolist()))
    assert c3_hits < 95  # the two orders differ on these rows
    inputs = dict(verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=labels[:, 0], noun_labels=labels[:, 1])
    recognition = EK100Metric(ties="official", keep_in_memory=True).compute(**inputs)
    anticipation = EK100Metric("anticipation", ties="official", keep_in_memory=True).compute(**inputs)
    assert recognition["all_action_top1"] == 100.0
    assert anticipation["all_action_top1"] == pytest.approx(c3_hits)

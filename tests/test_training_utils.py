"""Parameter groups, schedules, mixup and losses used by the training script."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_checkpoint import TINY_BERT
from torch import nn
from transformers import BertConfig, BertModel

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
from modeling_mambavl.training.builders import init_head_bias_from_prior
from modeling_mambavl.training.losses import (
    VerbNounLoss,
    class_balanced_weights,
    class_counts,
    log_prior,
    soft_cross_entropy,
)
from modeling_mambavl.training.mixup import mix_batch, one_hot_smoothed
from modeling_mambavl.training.optimization import build_param_groups, classify_parameters, lr_multiplier


class ToyMixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.in_proj = nn.Linear(4, 8, bias=False)
        self.D = nn.Parameter(torch.ones(8))


class ToyFusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.A_log = nn.Parameter(torch.zeros(8, 2))
        self.video_mixer, self.text_mixer = ToyMixer(), ToyMixer()


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=0, num_attention_heads=2,
                         intermediate_size=8)
        self.text_model = BertModel(cfg)
        self.fusion = ToyFusion()
        self.head = nn.Linear(8, 3)


def test_parameter_groups_follow_the_recipe_split():
    model = ToyModel()
    kinds = classify_parameters(model)
    assert kinds["fusion.A_log"] == "rest" and kinds["head.weight"] == "rest"
    assert kinds["fusion.video_mixer.in_proj.weight"] == "mamba" and kinds["fusion.text_mixer.D"] == "mamba"
    assert all(v == "backbone" for k, v in kinds.items() if k.startswith("text_model."))
    assert classify_parameters(model, state_params_group="mamba")["fusion.A_log"] == "mamba"

    groups, specs = build_param_groups(model, lr=3e-3, lr_backbone=1e-3, lr_mamba=2e-3, weight_decay=0.05)
    by_name = {s.name: s for s in specs}
    assert by_name["rest"].lr == 3e-3 and by_name["mamba"].lr == 2e-3 and by_name["backbone"].lr == 1e-3
    assert "fusion.A_log" in by_name["rest/no_decay"].params and "head.bias" in by_name["rest/no_decay"].params
    assert "fusion.video_mixer.D" in by_name["mamba/no_decay"].params
    _, specs = build_param_groups(model, lr=1.0, weight_decay=0.05, decay_state_params=True)
    decayed = {n for s in specs if s.weight_decay > 0 for n in s.params}
    assert {"fusion.A_log", "fusion.text_mixer.D"} <= decayed
    # Every trainable parameter is in exactly one group.
    names = [n for s in specs for n in s.params]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_schedules():
    cos = [lr_multiplier(s, total_steps=10, steps_per_epoch=5, warmup_steps=2) for s in range(10)]
    assert cos[0] == pytest.approx(0.5) and cos[1] == pytest.approx(1.0)
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    step = [lr_multiplier(s, 100, 10, "step", milestones=(0, 2, 4), factors=(1, 0.1, 0.01)) for s in (0, 19, 20, 45)]
    assert step == [1, 1, 0.1, 0.01]
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier(0, 1, 1, "linearish")


def test_mixup_mixes_videos_and_both_targets_with_one_lambda():
    videos = torch.randn(4, 3, 2, 8, 8)
    verbs, nouns = one_hot_smoothed(torch.tensor([0, 1, 2, 0]), 3), one_hot_smoothed(torch.tensor([1, 1, 0, 2]), 4)
    mixed, (mv, mn), lam = mix_batch(videos, [verbs, nouns], torch.Generator().manual_seed(3), cutmix_alpha=0.0)
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * videos + (1 - lam) * videos.flip(0))
    torch.testing.assert_close(mv, lam * verbs + (1 - lam) * verbs.flip(0))
    torch.testing.assert_close(mn.sum(-1), torch.ones(4))
    again = mix_batch(videos, [verbs, nouns], torch.Generator().manual_seed(3), cutmix_alpha=0.0)
    assert torch.equal(again[0], mixed)


def test_cutmix_pastes_the_same_box_in_every_frame():
    videos = torch.zeros(2, 4, 1, 16, 16)
    videos[1] = 1.0
    mixed, (targets,), lam = mix_batch(videos, [one_hot_smoothed(torch.tensor([0, 1]), 2)],
                                       torch.Generator().manual_seed(0), mixup_alpha=0.0)
    pasted = mixed[0, :, 0]  # clip 0 received a box from clip 1
    assert torch.equal(pasted[0], pasted[-1]) and pasted.sum() > 0
    assert lam == pytest.approx(1 - float(pasted[0].mean()))
    assert targets[0, 1] == pytest.approx(1 - lam)


def test_losses():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    ref = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot_smoothed(labels, 5, 0.1)), ref)
    w = class_balanced_weights(torch.tensor([100, 10, 1, 0]))
    assert w[3] == 0 and w[0] < w[1] < w[2] and w[:3].mean() == pytest.approx(1.0)
    counts = torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0])
    la = VerbNounLoss("logit_adjusted", counts, counts)
    t = one_hot_smoothed(labels, 5)
    assert la(logits, logits, t, t) != 2 * soft_cross_entropy(logits, t)
    with pytest.raises(ValueError, match="class counts"):
        VerbNounLoss("class_balanced")
    with pytest.raises(ValueError, match="outputs.loss"):  # the plain cross-entropy is the model's own
        VerbNounLoss("ce", counts, counts)


def test_long_tail_losses_smooth_the_targets_once():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    equal = torch.ones(5)  # equal counts: class-balanced weights of 1, a uniform prior
    for kind in ("class_balanced", "logit_adjusted"):
        loss = VerbNounLoss(kind, equal, equal, label_smoothing=0.1)(logits, logits, one_hot_smoothed(labels, 5),
                                                                     one_hot_smoothed(labels, 5))
        torch.testing.assert_close(loss, 2 * F.cross_entropy(logits, labels, label_smoothing=0.1))
        ids = VerbNounLoss(kind, equal, equal, label_smoothing=0.1)(logits, logits, labels, labels)
        torch.testing.assert_close(ids, loss)  # class ids or one-hot targets: the same loss


def test_one_class_prior_for_the_head_bias_and_the_logit_adjustment():
    rows = [{"verb_class": v, "noun_class": n} for v, n in ((0, 1), (0, 2), (2, 2), (0, 2))] + [{"verb_class": None}]
    counts = class_counts(rows, "verb_class", 4)
    assert counts.tolist() == [3, 0, 1, 0] and counts.dtype == torch.float64
    prior = log_prior(counts)
    torch.testing.assert_close(prior.exp(), torch.tensor([3, 0.5, 1, 0.5], dtype=torch.float64) / 5)
    config = MambaVLConfig.from_preset("features-768", num_verb_classes=4, num_noun_classes=3, actions=[[0, 1]],
                                       hidden_size=16, text_config=TINY_BERT)
    model = MambaVLForVideoClassification(config)
    init_head_bias_from_prior(model, rows)
    assert torch.equal(model.verb_head.bias, prior.float())
    assert torch.equal(model.noun_head.bias, log_prior(class_counts(rows, "noun_class", 3)).float())
    adjusted = VerbNounLoss("logit_adjusted", counts, class_counts(rows, "noun_class", 3))
    assert torch.equal(adjusted.verb_log_prior, prior.float())
    with pytest.raises(ValueError, match="verb_class 7 of a row is outside"):
        class_counts([{"verb_class": 7}], "verb_class", 4)

"""Parameter groups, schedules, mixup and losses used by the training script."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from modeling_mambavl.training.losses import VerbNounLoss, class_balanced_weights, soft_cross_entropy
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
    assert la(logits, logits, t, t) != VerbNounLoss()(logits, logits, t, t)
    with pytest.raises(ValueError, match="class counts"):
        VerbNounLoss("class_balanced")

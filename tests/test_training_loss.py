"""The training loss on a fixed batch against an independent float64 formula: CE(verb) + CE(noun) of the targets
smoothed once, ``(1 - s) * onehot + s / C``, mixed by mixup / CutMix's lambda with the batch reversed, over the clips
that could be read. With and without mixup, with label smoothing 0.0 and 0.1, within 1e-6 (relative: the loss is
float32)."""

import pytest
import torch
import torch.nn.functional as F

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor
from modeling_mambavl.training.mixup import mix_batch
from modeling_mambavl.training.steps import compute_loss

MIXUP = {"mixup_alpha": 0.8, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5}
CUTMIX = {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5}
MIX_SEED = 1234
DROPOUT_SEED = 99


def tiny_model(label_smoothing: float, head_dropout: float = 0.1) -> MambaVLForVideoClassification:
    """The tiny preset at 32 px with O(1) head weights (so that smoothing and mixup move the loss) and head dropout
    (so that the loss depends on the seeded dropout draws)."""
    torch.manual_seed(0)
    processor = MambaVLProcessor()
    config = MambaVLConfig.from_preset("tiny", image_size=32, vision_config={"image_size": 32},
                                       label_smoothing=label_smoothing, head_dropout=head_dropout,
                                       **processor.default_question_inputs())
    model = MambaVLForVideoClassification(config).train()
    with torch.no_grad():  # the pooled features are ~3e-3: logits of std ~1.5
        model.verb_head.weight.normal_(std=40.0)
        model.noun_head.weight.normal_(std=40.0)
    return model


def fixed_batch(valid=(True, True, True, True)) -> dict:
    g = torch.Generator().manual_seed(1)
    n = len(valid)
    return {
        "pixel_values": torch.randn(n, 8, 3, 32, 32, generator=g),
        "verb_labels": torch.tensor([3, 7, 3, 96])[:n],
        "noun_labels": torch.tensor([1, 5, 299, 1])[:n],
        "valid": torch.tensor(valid),
    }


def training_loss(model, batch, mixup=None) -> tuple[torch.Tensor, int]:
    """What the training loop computes for one batch (plain cross-entropy, dropout and mixup seeded)."""
    torch.manual_seed(DROPOUT_SEED)
    config = model.config
    return compute_loss(model, batch, num_verbs=config.num_verb_classes, num_nouns=config.num_noun_classes,
                        mixup=mixup, generator=torch.Generator().manual_seed(MIX_SEED))


def reference_loss(verb_logits, noun_logits, verbs, nouns, smoothing: float, lam: float) -> float:
    """Float64: sum over the two heads of the batch mean of -sum_c t_c log_softmax(z)_c, with
    t = lam * smooth(y) + (1 - lam) * smooth(y reversed over the batch)."""
    total = 0.0
    for logits, labels in ((verb_logits, verbs), (noun_logits, nouns)):
        classes = logits.shape[-1]
        smooth = F.one_hot(labels, classes).double() * (1 - smoothing) + smoothing / classes
        targets = lam * smooth + (1 - lam) * smooth.flip(0)
        total += float(-(targets * F.log_softmax(logits.double(), -1)).sum(-1).mean())
    return total


def recorded_forward(model):
    """Record the logits and the videos of every forward call."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append({"verb_logits": output.verb_logits.detach(), "noun_logits": output.noun_logits.detach(),
                      "pixel_values": kwargs["pixel_values"].detach()})

    return calls, model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("mixup", [None, MIXUP, CUTMIX], ids=["plain", "mixup", "cutmix"])
@pytest.mark.parametrize("valid", [(True, True, True, True), (True, False, True, True)], ids=["all", "one-unread"])
def test_training_loss_matches_the_formula(smoothing, mixup, valid):
    # An unreadable clip leaves the forward (its dropout draws change): head dropout off there.
    model = tiny_model(smoothing, head_dropout=0.1 if all(valid) else 0.0)
    batch = fixed_batch(valid)
    calls, handle = recorded_forward(model)
    loss, count = training_loss(model, batch, mixup)
    handle.remove()
    keep = batch["valid"]
    assert count == int(keep.sum()) and len(calls) == 1
    call = calls[0]
    rows = slice(None) if call["verb_logits"].shape[0] == count else keep
    videos = batch["pixel_values"][keep]
    lam = 1.0
    if mixup is not None:
        videos, _, lam = mix_batch(videos, [], torch.Generator().manual_seed(MIX_SEED), **mixup)
        assert 0.0 < lam < 1.0
    torch.testing.assert_close(call["pixel_values"][rows], videos, rtol=0, atol=0)
    expected = reference_loss(call["verb_logits"][rows], call["noun_logits"][rows], batch["verb_labels"][keep],
                              batch["noun_labels"][keep], smoothing, lam)
    # float32 against float64: 1e-6 relative is a few float32 steps of a loss near 10
    assert abs(loss.item() - expected) <= 1e-6 * abs(expected), (loss.item(), expected)
    assert loss.requires_grad
    # Smoothing once: twice (or not at all) would move the loss far beyond the tolerance.
    if smoothing:
        twice = reference_loss(call["verb_logits"][rows], call["noun_logits"][rows], batch["verb_labels"][keep],
                               batch["noun_labels"][keep], 1 - (1 - smoothing) ** 2, lam)
        assert abs(loss.item() - twice) > 1e-3


def test_training_loss_with_no_readable_clip_is_a_zero_that_reaches_every_head():
    model = tiny_model(0.1)
    loss, count = training_loss(model, fixed_batch((False, False, False, False)), MIXUP)
    assert count == 0 and loss.item() == 0.0
    loss.backward()
    assert model.verb_head.weight.grad is not None and model.noun_head.weight.grad is not None

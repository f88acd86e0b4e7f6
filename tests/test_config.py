import dataclasses
import json
import math

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, BertConfig, TimesformerConfig, VideoMAEConfig

from modeling_mambavl import MambaVLConfig
from modeling_mambavl.configuration import PRESETS
from modeling_mambavl.ek100 import EK100Vocabulary


def _reload(config: MambaVLConfig, tmp_path) -> MambaVLConfig:
    config.save_pretrained(tmp_path)
    return AutoConfig.from_pretrained(tmp_path)


def test_defaults_are_the_paper_and_the_ek100_label_space():
    config = MambaVLConfig()
    vocab = EK100Vocabulary.default()
    assert (config.hidden_size, config.state_size, config.expand, config.conv_kernel) == (768, 16, 2, 4)
    assert config.dt_rank == 48 and config.intermediate_size == 1536
    assert config.fusion_type == "ssm" and config.text_encoder == "embeddings"
    assert config.question_types == ("verb", "noun") and config.label_smoothing == 0.1
    assert len(config.verb_id2label) == 97 and len(config.noun_id2label) == 300
    assert config.num_labels == 3806 and len(config.actions) == 3806
    v, n = config.actions[1234]
    assert config.id2label[1234] == vocab.action_name(1234) == f"{vocab.verb_name(v)} {vocab.noun_name(n)}"
    assert config.label2id[config.id2label[1234]] == 1234
    assert len(config.label2id) == 3806  # action display names are unique
    # The default text side is RoBERTa-base shaped; only its embeddings run, so it has no layers.
    assert config.text_config.model_type == "roberta" and config.text_config.vocab_size == 50265
    assert config.text_config.num_hidden_layers == 0
    assert MambaVLConfig(fusion_type="transformer").text_config.num_hidden_layers == 12


def test_json_round_trip_keeps_int_keys_nested_configs_and_everything_else(tmp_path):
    config = MambaVLConfig.from_preset("timesformer-base", fusion_type="transformer", fuser_layers=12,
                                       fuser_heads=12, default_question_input_ids=[[0, 5, 2], [0, 7, 9, 2]])
    reloaded = _reload(config, tmp_path)
    assert type(reloaded) is MambaVLConfig
    assert isinstance(reloaded.vision_config, TimesformerConfig) and reloaded.vision_config.num_frames == 8
    assert reloaded.text_config.model_type == "roberta" and reloaded.text_config.num_hidden_layers == 12
    assert all(isinstance(k, int) for k in reloaded.verb_id2label) and reloaded.noun_id2label[0] == "tap"
    assert all(isinstance(k, int) for k in reloaded.id2label)
    assert reloaded.question_types == ("verb", "noun") and reloaded.default_question_input_ids[1] == [0, 7, 9, 2]
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(reloaded.to_dict()) == strip(config.to_dict())
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mambavl" and saved["vision_config"]["model_type"] == "timesformer"


@pytest.mark.parametrize("vision", [VideoMAEConfig(num_frames=4, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64),
                                    {"model_type": "timesformer", "num_frames": 4, "hidden_size": 32}])
def test_any_transformers_vision_and_text_config_round_trips(vision, tmp_path):
    text = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    config = MambaVLConfig(vision_config=vision, text_config=text, hidden_size=32)
    assert config.num_frames == 4 and config.vision_feature_dim == 32  # taken from the backbone
    reloaded = _reload(config, tmp_path)
    assert reloaded.vision_config.to_dict() == config.vision_config.to_dict()
    assert isinstance(reloaded.text_config, BertConfig) and reloaded.text_config.vocab_size == 99


def test_presets():
    assert set(PRESETS) == {"tiny", "timesformer-base", "videomae-base", "videomae-large", "features-768",
                            "features-1024"}
    tiny = MambaVLConfig.from_preset("tiny")
    assert tiny.num_frames <= 8 and tiny.image_size <= 112 and tiny.vision_config.image_size <= 112
    assert tiny.vision_config.model_type in ("videomae", "timesformer")
    assert tiny.text_config.vocab_size == 4096 and tiny.text_config.pad_token_id == 0
    assert tiny.text_config.model_type == "bert"
    for name, (model_type, width, frames, tokens) in {
        "timesformer-base": ("timesformer", 768, 8, 1 + 8 * 14 * 14),
        "videomae-base": ("videomae", 768, 16, 8 * 14 * 14),
        "videomae-large": ("videomae", 1024, 16, 8 * 14 * 14),
    }.items():
        config = MambaVLConfig.from_preset(name)
        assert config.vision_config.model_type == model_type and config.hidden_size == width
        assert config.num_frames == config.vision_config.num_frames == frames
        has_cls, _, temporal = config.video_layout
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        assert int(has_cls) + temporal * patches == tokens
        assert config.text_config.vocab_size == 50265 and config.text_config.num_hidden_layers == 0
    for name, width in (("features-768", 768), ("features-1024", 1024)):
        config = MambaVLConfig.from_preset(name)
        assert config.vision_config is None and config.vision_feature_dim == width == config.hidden_size
        assert config.text_config.model_type == "roberta" and config.text_config.hidden_size == 768
    # Baselines run the text model whole: the preset then gives it its layers.
    assert MambaVLConfig.from_preset("features-768", fusion_type="mlp").text_config.num_hidden_layers == 12


def test_preset_overrides_merge_nested_dicts():
    config = MambaVLConfig.from_preset("tiny", hidden_size=32, vision_config={"num_hidden_layers": 0})
    assert config.hidden_size == 32 and config.vision_config.num_hidden_layers == 0
    assert config.vision_config.image_size == 64  # the rest of the preset's vision config is kept
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny"):
        MambaVLConfig.from_preset("huge")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"fusion_type": "attention"}, "fusion_type"),
        ({"question_pooling": "max"}, "question_pooling"),
        ({"text_encoder": "pooled"}, "text_encoder"),
        ({"video_token_order": "twh"}, "video_token_order"),
        ({"question_types": ("verb",)}, "question_types"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"fusion_type": "transformer", "hidden_size": 30, "fuser_heads": 4}, "fuser_heads"),
        ({"num_verb_classes": 10}, "actions"),
        ({"actions": [[0, 1], [0, 1]]}, "actions"),
        ({"actions": [[97, 0]]}, "actions"),
        ({"verb_id2label": {0: "take"}}, "verb_id2label"),
        ({"default_question_input_ids": [[1, 2]]}, "default_question_input_ids"),
        ({"default_question_input_ids": [[1, 2], [3]], "default_question_attention_mask": [[1, 1], [1, 1]]},
         "default_question_attention_mask"),
        ({"vision_config": {"model_type": "videomae", "num_frames": 16}, "num_frames": 8}, "num_frames"),
        ({"vision_config": {"model_type": "videomae", "hidden_size": 64}, "vision_feature_dim": 32},
         "vision_feature_dim"),
        ({"num_labels": 5}, "num_labels"),
        ({"time_step_rank": "big"}, "time_step_rank"),
        ({"initializer": "xavier"}, "initializer"),
        ({"initializer": "authors_with_text", "fusion_type": "none"}, "initializer"),
        ({"question_pad_token_id": 50265}, "question_pad_token_id"),
        ({"authors_text_encoder": True}, "authors_text_encoder"),
        ({"mixer_recompute": "all"}, "mixer_recompute"),
        ({"mixer_recompute_chunk_size": 0}, "mixer_recompute_chunk_size"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"MambaVLConfig.{field}"):
        MambaVLConfig(**kwargs)


@pytest.mark.parametrize("kwargs, field", [({"hidden_size": "768"}, "hidden_size"),
                                           ({"share_state_matrix": "yes"}, "share_state_matrix"),
                                           ({"actions": "0:1"}, "actions")])
def test_wrong_types_raise_the_strict_dataclass_error(kwargs, field):
    with pytest.raises(StrictDataclassFieldValidationError, match=field):
        MambaVLConfig(**kwargs)


def test_single_question_mode_uses_num_labels(tmp_path):
    config = MambaVLConfig(question_types=("action",), num_labels=106)
    assert config.num_labels == 106 and config.actions is None
    reloaded = _reload(config, tmp_path)
    assert reloaded.num_labels == 106 and reloaded.question_types == ("action",)


def test_custom_label_space():
    config = MambaVLConfig(num_verb_classes=2, num_noun_classes=3, verb_id2label={"0": "cut", "1": "wash"},
                           noun_id2label={0: "onion", 1: "pan", 2: "knife"}, actions=[[0, 0], [1, 1], [1, 2]])
    assert config.verb_id2label == {0: "cut", 1: "wash"}
    assert config.id2label == {0: "cut onion", 1: "wash pan", 2: "wash knife"} and config.num_labels == 3


# --------------------------------------------------------------------- every field validated, random values
NAN = float("nan")

# One refused value per field (a wrong value of the right type where the type allows one).
BAD_FIELD_VALUES = {
    "vision_config": 42,
    "vision_feature_dim": 0,
    "video_token_order": "twh",
    "video_has_cls": "yes",
    "video_temporal_size": -2,
    "text_config": {"model_type": "roberta", "hidden_size": "wide"},
    "text_encoder": "pooled",
    "freeze_text_encoder": "no",
    "text_embedding_dropout": 1.0,
    "hidden_size": 0,
    "state_size": -16,
    "expand": 0,
    "conv_kernel": 0,
    "time_step_rank": 0,
    "time_step_min": 0.0,
    "time_step_max": 1e-6,  # below time_step_min
    "time_step_floor": -1e-4,
    "fusion_type": "attention",
    "vision_adapter": "mlp",
    "num_fusion_layers": 0,
    "share_state_matrix": "yes",
    "fuser_layers": 0,
    "fuser_heads": -4,
    "fuser_mlp_ratio": 0.0,
    "fuser_max_position_embeddings": 0,
    "fuser_dropout": 1.0,
    "fuser_drop_path": -0.1,
    "question_types": ("verb",),
    "question_pooling": "max",
    "default_question_input_ids": [[1, 2]],  # one row for two question types
    "default_question_attention_mask": [[1, 1], [1, 1]],  # without input ids
    "num_verb_classes": 0,
    "num_noun_classes": -300,
    "verb_id2label": {0: "take"},
    "noun_id2label": {"a": "tap"},
    "actions": [[97, 0]],
    "num_frames": 0,
    "image_size": -224,
    "image_mean": [0.5],
    "image_std": [0.5, 0.0, 0.5],
    "label_smoothing": 1.5,
    "head_dropout": NAN,
    "layer_norm_eps": 0.0,
    "rms_norm_eps": -1e-5,
    "initializer_range": -0.02,
    "scan_backend": "Fast Scan!",
    "mixer_chunk_size": 0,
    "initializer": "xavier",
    "question_pad_token_id": -1,
    "authors_text_encoder": True,  # needs text_encoder="full"; the default SSM model runs the embeddings only
    "mixer_recompute": "everything",
    "mixer_recompute_chunk_size": -512,
}
# Fields that hold a number checked for range: NaN and infinity are refused too.
FLOAT_FIELDS = ("text_embedding_dropout", "time_step_min", "time_step_max", "time_step_floor", "fuser_mlp_ratio",
                "fuser_dropout", "fuser_drop_path", "label_smoothing", "head_dropout", "layer_norm_eps",
                "rms_norm_eps", "initializer_range")


def _own_fields() -> list[str]:
    inherited = {f.name for f in dataclasses.fields(MambaVLConfig.__mro__[1])} if dataclasses.is_dataclass(
        MambaVLConfig.__mro__[1]) else set()
    return [f.name for f in dataclasses.fields(MambaVLConfig) if f.name in MambaVLConfig.__annotations__
            and f.name not in inherited]


def test_every_field_has_a_validation_case():
    fields = _own_fields()
    assert len(fields) >= 40  # the enumeration really found the config's fields
    assert set(fields) == set(BAD_FIELD_VALUES), (set(fields) ^ set(BAD_FIELD_VALUES))


@pytest.mark.parametrize("field", sorted(BAD_FIELD_VALUES))
def test_bad_field_value_is_refused_naming_the_field(field):
    with pytest.raises((ValueError, StrictDataclassFieldValidationError)) as err:
        MambaVLConfig(**{field: BAD_FIELD_VALUES[field]})
    assert field in str(err.value)


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [NAN, math.inf])
def test_non_finite_numbers_are_refused(field, value):
    with pytest.raises(ValueError) as err:
        MambaVLConfig(**{field: value})
    assert field in str(err.value)


def _field_values():
    anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True),
                         st.text(max_size=8), st.lists(st.integers(-3, 400), max_size=3))
    return st.dictionaries(st.sampled_from(sorted(BAD_FIELD_VALUES)), anything, max_size=4)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_field_values())
def test_random_config_values_give_a_config_or_a_named_error(kwargs):
    try:
        config = MambaVLConfig(**kwargs)
    except StrictDataclassFieldValidationError as e:
        assert any(k in str(e) for k in kwargs), str(e)
        return
    except ValueError as e:
        assert "MambaVLConfig." in str(e) or any(k in str(e) for k in kwargs), str(e)
        return
    # Accepted: it must survive a JSON round trip unchanged.
    again = MambaVLConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()

"""``MambaVLConfig``: every hyper-parameter of a MambaVL model, validated on construction.

No ``from __future__ import annotations`` here: the strict dataclass validates field types from evaluated annotations.
"""

import math
import os
import re
from typing import Any

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .presets import default_text_encoder, preset_kwargs, roberta_base_text_config

FUSION_TYPES = ("ssm", "transformer", "mlp", "none", "mean_mlp", "linear_probe")
# The controls see no questions: "none" is the video Mamba alone, "mean_mlp" an MLP over the mean video token,
# "linear_probe" a linear classifier on the backbone's pooled output.
CONTROL_FUSION_TYPES = ("none", "mean_mlp", "linear_probe")
# What sits between the backbone and the fusion: the paper's LayerNorm + Linear + tanh, or nothing (the tokens go
# straight in: the linear probe, and the authors' AVION models, whose backbone ends in its own norm).
VISION_ADAPTERS = ("norm_linear_tanh", "identity")
TEXT_ENCODERS = ("embeddings", "full")
QUESTION_POOLINGS = ("masked", "include_padding")
VIDEO_TOKEN_ORDERS = ("auto", "thw", "hwt")
QUESTION_TYPE_SETS = (("verb", "noun"), ("noun", "verb"), ("action",))
# "default": S4D-real A, Mamba's Δ init, the text model as built or loaded. "authors": the authors' re-initialisation
# of everything they trained (xavier-uniform on every parameter of 2+ dims, then trunc-normal Linear layers with zero
# bias, LayerNorms reset); "authors_with_text" also re-initialises the frozen text model, as their code did.
INITIALIZERS = ("default", "authors", "authors_with_text")

# The question pipeline task. Importing the package registers it with transformers; without the package,
# config.json's custom_pipelines points pipeline(..., trust_remote_code=True) at the checkpoint's pipeline_mambavl.py.
PIPELINE_TASK = "video-question-classification"
PIPELINE_FILE = "pipeline_mambavl.py"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": f"{PIPELINE_FILE[:-3]}.VideoQuestionClassificationPipeline",
                    "pt": ["AutoModelForVideoClassification"], "tf": [], "type": "multimodal"},
}

# What a fusion mixer keeps for the backward (modeling_mambavl.mixer.RECOMPUTE_LEVELS; not imported: the configuration
# does not depend on the modeling code).
MIXER_RECOMPUTE_LEVELS = ("none", "speed", "memory")

# Token layout of transformers video backbones: (has CLS, order of the patch tokens, frames per temporal token).
# TimeSformer emits [CLS] + patch-major / time-minor tokens, one per frame; VideoMAE and ViViT are already (t, h, w)
# over tubelets.
_KNOWN_VIDEO_LAYOUTS = {
    "timesformer": (True, "hwt", lambda c: 1),
    "videomae": (False, "thw", lambda c: c.tubelet_size),
    "vivit": (True, "thw", lambda c: c.tubelet_size[0]),
}


def _ek100_vocabulary():
    """The shipped EK100 vocabulary, or ``None`` where the package is not installed (code loaded from a checkpoint)."""
    try:
        from ..ek100.vocabulary import EK100Vocabulary
    except ImportError:
        return None
    return EK100Vocabulary.default()


def save_code_bundle(save_directory: str | os.PathLike) -> dict[str, str]:
    """Write the checkpoint's flat code files; return the ``auto_map`` that points at them."""
    from ..remote_code import write_code_bundle

    return write_code_bundle(save_directory)


def _fail(field: str, message: str) -> None:
    raise ValueError(f"MambaVLConfig.{field}: {message}")


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        _fail(name, f"must be a positive integer, got {value}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        _fail(name, f"must be in [0, 1), got {value}")


def _int_keyed(name: str, mapping: dict, size: int) -> dict[int, str]:
    """JSON turns int keys into strings: convert back and check the map covers 0..size-1."""
    try:
        converted = {int(k): str(v) for k, v in mapping.items()}
    except ValueError:
        _fail(name, "keys must be integer class ids")
    if sorted(converted) != list(range(size)):
        _fail(name, f"must map every class id 0..{size - 1} to a name; got {len(converted)} entries")
    return dict(sorted(converted.items()))


@strict
class MambaVLConfig(PreTrainedConfig):
    r"""Configuration of [`MambaVLModel`] / [`MambaVLForVideoClassification`].

    Video tokens (from `vision_config`'s backbone, or pre-extracted `video_features` of width `vision_feature_dim`) and
    tokenized questions (embedded by `text_config`'s model) are fused by `fusion_type` and classified into EK100 verbs
    and nouns. Defaults follow the paper: SSM fusion at D = `hidden_size` 768 with one Mamba mixer per modality
    sharing `A`, RoBERTa-base question embeddings, 97 verb / 300 noun classes, label smoothing 0.1.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers video backbone config (TimeSformer, VideoMAE, ViViT, ...). `None`: the model reads
            pre-extracted `video_features`.
        vision_feature_dim (`int`, *optional*):
            Width of the video tokens; the backbone's `hidden_size`, or `hidden_size` for features by default.
        video_token_order (`str`, defaults to `"auto"`):
            Order of the backbone's (or the features') patch tokens: `"thw"` (frame-major), `"hwt"` (patch-major,
            time-minor, as transformers' TimeSformer) or `"auto"` (from the backbone type; `"thw"` for features).
            The model always re-orders to [CLS] + (t, h, w).
        video_has_cls (`bool`, *optional*):
            Whether the first token is a CLS token (automatic for known backbones; `False` otherwise).
        video_temporal_size (`int`, *optional*):
            Temporal token positions of `"hwt"` features (default `num_frames`).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers text encoder config. Default: RoBERTa-base shapes (0 layers when only the embeddings run).
        text_encoder (`str`, *optional*):
            `"embeddings"` (the text model's input embeddings; the default for `"ssm"` and the controls) or `"full"`
            (the whole text model; the default for `"transformer"` and `"mlp"`, which use its pooled output).
        freeze_text_encoder (`bool`, defaults to `True`), text_embedding_dropout (`float`, defaults to 0.0):
            The frozen text model runs in eval mode; `text_embedding_dropout` (0.1 reproduces the authors' active
            RoBERTa dropout) is applied after it.
        hidden_size (`int`, defaults to 768): D, the fusion width.
        state_size (`int`, defaults to 16), expand (`int`, defaults to 2), conv_kernel (`int`, defaults to 4),
        time_step_rank (`int` or `"auto"`), time_step_min / time_step_max / time_step_floor (`float`):
            Mamba-v1 mixer shapes and Δ initialisation (`d_inner = expand * D`, `dt_rank = ceil(D / 16)`).
        fusion_type (`str`, defaults to `"ssm"`):
            `"ssm"` (the paper), `"transformer"` / `"mlp"` (the authors' baselines), or the question-free controls
            `"none"` (video Mamba only), `"mean_mlp"` (MLP over the mean video token) and `"linear_probe"` (a linear
            classifier on the backbone's pooled output: the CLS token, or the mean token without one, then LayerNorm;
            the backbone is frozen and kept in eval mode).
        vision_adapter (`str`, *optional*):
            `"norm_linear_tanh"` (the paper: LayerNorm + Linear(D_v, D) + tanh after the backbone; the default) or
            `"identity"` (the backbone's tokens go straight into the fusion, which needs `hidden_size ==
            vision_feature_dim`: the authors' AVION models, and always for `"linear_probe"`).
        num_fusion_layers (`int`, defaults to 1):
            1 is the paper's block (one mixer per modality, no norm, no residual); more stacks pre-RMSNorm residual
            layers, each with its own shared `A`.
        share_state_matrix (`bool`, defaults to `True`): `False` gives each mixer its own `A_log`.
        fuser_layers (`int`, defaults to 6), fuser_heads (`int`, defaults to 4), fuser_mlp_ratio,
        fuser_max_position_embeddings (5,000), fuser_dropout (0.1), fuser_drop_path (0.1):
            The Transformer "Fuser" baseline (12 x 12 in the paper's cost table).
        question_types (`tuple[str]`, defaults to `("verb", "noun")`):
            One question per entry; `("action",)` is the single-question, single-head mode (give `num_labels`).
        question_pooling (`str`, defaults to `"masked"`):
            `"include_padding"` reproduces the authors' code, which ignores the attention mask (for their checkpoints).
        default_question_input_ids / default_question_attention_mask (`list[list[int]]`, *optional*):
            One row per question type, used when `forward` gets no questions.
        num_verb_classes (97), num_noun_classes (300), verb_id2label, noun_id2label, actions:
            The label space; by default the official EK100 vocabulary. `actions` lists the (verb, noun) pair of each
            action id and defines `id2label` / `label2id` (action names such as "take chopping board").
        num_frames (`int`, *optional*): frames per clip, the single source of truth (must agree with the backbone).
        image_size, image_mean, image_std: the frames the vision backbone expects (read by the video processor).
        label_smoothing (0.1), head_dropout (0.0), layer_norm_eps, rms_norm_eps, initializer_range.
        initializer (`str`, defaults to `"default"`):
            How a freshly built model's weights are drawn (loaded weights are never touched). `"default"`: S4D-real
            `A = -(1..N)`, Mamba's Δ bias (softplus^-1 of a log-uniform time step), trunc-normal(`initializer_range`)
            Linear layers, the text model as its own class initialises it (or as loaded by `from_backbones`).
            `"authors"`: the re-initialisation that ends the authors' model classes, in their order: xavier-uniform on
            every parameter of two or more dimensions, then trunc-normal(`initializer_range`, 0.02 in their code)
            weights and zero biases on every `nn.Linear`, LayerNorms reset to weight 1 / bias 0; parameters of one
            dimension it does not reach keep Mamba's own init (`D` = 1, PyTorch's default conv bias). So `A_log` ends
            near 0 (A ≈ -1 ± 0.06 at D = 768) and the Δ bias is 0 (Δ ≈ softplus(0) = 0.693 at init).
            `"authors_with_text"`: the same applied to the frozen text model too, as their code did (RoBERTa's
            pretrained embeddings are overwritten: word-embedding std ≈ 0.006 at RoBERTa-base size). Pretrained
            backbones are never re-initialised (the authors loaded theirs after the re-initialisation).
        question_pad_token_id (`int`, *optional*):
            The pad id of the questions' tokenizer. When `forward` gets `question_input_ids` without
            `question_attention_mask`, the mask is `question_input_ids != question_pad_token_id` (with a one-time
            warning). `None` (the default, and configs saved before this field existed): `text_config.pad_token_id`.
            Set it when the tokenizer is not the text model's own (the training script does).
        authors_text_encoder (`bool`, defaults to `False`):
            With `text_encoder="full"`, run the text model as the authors' Transformer / MLP baselines did: without an
            attention mask (padding attended; positions from the ids, as RoBERTa derives them) and in the model's own
            train / eval mode even when frozen, so its dropout is active while training. For reproducing their
            baseline numbers; the default masks padding and keeps a frozen text model in eval mode.
        scan_backend (`str`, defaults to `"auto"`): passed to `modeling_mambavl.ops.selective_scan`.
        mixer_chunk_size (`int`, *optional*, defaults to 2048):
            On the CPU the fusion mixers run sequences longer than this in pieces of this many tokens, carrying the
            convolution and scan states across (the same outputs up to float rounding): a piece's activations stay
            in the CPU cache, which keeps the cost linear in the number of frames. `None` runs every sequence in one
            pass; GPU tensors run in one pass unless `mixer_recompute` recomputes.
        mixer_recompute (`str`, defaults to `"none"`):
            What the fusion mixers keep for the backward of a training step: `"none"` every intermediate; `"speed"`
            the input projection's output (as mamba-ssm's `mamba_inner_fn`), recomputing the convolution, Δ, B and
            C in the backward (the scan's backward recomputes its output); `"memory"` only the mixer's input,
            recomputing the input projection too. Recomputation runs one piece at a time (on every device; pieces of
            at most `mixer_chunk_size` and `mixer_recompute_chunk_size` tokens), with the same outputs and gradients.
            On a 2-core CPU at 32-128 frames, `"speed"` took 0.85-0.97x the step time of `"none"` with 41-58 % of its
            memory, `"memory"` 0.99-1.07x with 23-44 % (BENCHMARKS.md); on GPUs this is not measured yet.
        mixer_recompute_chunk_size (`int`, *optional*, defaults to 512):
            The longest piece when `mixer_recompute` recomputes (`None`: `mixer_chunk_size` alone). A piece's
            recomputed intermediates are the backward's transient memory, so shorter pieces lower the peak (256: about
            20 % less at `"memory"`) and cost time (about 1.16x `"none"` instead of 1.01x at 64 frames on a CPU).
    """

    model_type = "mambavl"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="videomae", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    vision_feature_dim: int | None = None
    video_token_order: str = "auto"
    video_has_cls: bool | None = None
    video_temporal_size: int | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_encoder: str | None = None
    freeze_text_encoder: bool = True
    text_embedding_dropout: float | int = 0.0
    hidden_size: int = 768
    state_size: int = 16
    expand: int = 2
    conv_kernel: int = 4
    time_step_rank: int | str = "auto"
    time_step_min: float | int = 0.001
    time_step_max: float | int = 0.1
    time_step_floor: float | int = 1e-4
    fusion_type: str = "ssm"
    vision_adapter: str | None = None
    num_fusion_layers: int = 1
    share_state_matrix: bool = True
    fuser_layers: int = 6
    fuser_heads: int = 4
    fuser_mlp_ratio: float | int = 4.0
    fuser_max_position_embeddings: int = 5000
    fuser_dropout: float | int = 0.1
    fuser_drop_path: float | int = 0.1
    question_types: list[str] | tuple[str, ...] = ("verb", "noun")
    question_pooling: str = "masked"
    default_question_input_ids: list[list[int]] | None = None
    default_question_attention_mask: list[list[int]] | None = None
    num_verb_classes: int = 97
    num_noun_classes: int = 300
    verb_id2label: dict[int, str] | dict[str, str] | None = None
    noun_id2label: dict[int, str] | dict[str, str] | None = None
    actions: list[list[int]] | list[tuple[int, int]] | None = None
    num_frames: int | None = None
    image_size: int | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    label_smoothing: float | int = 0.1
    head_dropout: float | int = 0.0
    layer_norm_eps: float | int = 1e-5
    rms_norm_eps: float | int = 1e-5
    initializer_range: float | int = 0.02
    initializer: str = "default"
    question_pad_token_id: int | None = None
    authors_text_encoder: bool = False
    scan_backend: str = "auto"
    mixer_chunk_size: int | None = 2048
    mixer_recompute: str = "none"
    mixer_recompute_chunk_size: int | None = 512

    def __post_init__(self, **kwargs):
        self._check_choices()
        self._check_numbers()
        if self.text_encoder is None:
            self.text_encoder = default_text_encoder(self.fusion_type)
        if self.vision_adapter is None:
            self.vision_adapter = "identity" if self.fusion_type == "linear_probe" else "norm_linear_tanh"
        if self.text_config is None:
            # RoBERTa-base shapes, as the paper; no layers are needed when only the embeddings run.
            self.text_config = roberta_base_text_config(12 if self.text_encoder == "full" else 0)
        self._check_questions()
        self._check_authors_options()
        self._set_label_space(kwargs)
        self._check_sub_config_dicts()
        super().__post_init__(**kwargs)
        self._drop_registered_custom_pipelines()
        self._check_sub_configs()
        self._check_vision_adapter()
        self._check_question_pad_token_id()

    def _drop_registered_custom_pipelines(self) -> None:
        # transformers' pipeline() refuses a task listed in config.custom_pipelines unless trust_remote_code=True,
        # even when the task is registered: where the package (or code that registered the task) is imported, the
        # registered pipeline serves it and the entry must not be seen.
        custom = getattr(self, "custom_pipelines", None)
        if not custom or PIPELINE_TASK not in custom:
            return
        from transformers.pipelines import PIPELINE_REGISTRY

        if PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks():
            del self.custom_pipelines

    # ------------------------------------------------------------------ validation
    def _check_choices(self) -> None:
        for name, value, allowed in (
            ("fusion_type", self.fusion_type, FUSION_TYPES),
            ("question_pooling", self.question_pooling, QUESTION_POOLINGS),
            ("video_token_order", self.video_token_order, VIDEO_TOKEN_ORDERS),
            ("initializer", self.initializer, INITIALIZERS),

            ("mixer_recompute", self.mixer_recompute, MIXER_RECOMPUTE_LEVELS),
        ):
            if value not in allowed:
                _fail(name, f"got {value!r}; allowed: {', '.join(map(repr, allowed))}")
        if self.vision_adapter is not None and self.vision_adapter not in VISION_ADAPTERS:
            _fail("vision_adapter", f"got {self.vision_adapter!r}; allowed: 'norm_linear_tanh', 'identity' (or None "
                                    "for the default)")
        if self.fusion_type == "linear_probe" and self.vision_adapter not in (None, "identity"):
            _fail("vision_adapter", f"got {self.vision_adapter!r} with fusion_type='linear_probe': a linear probe reads "
                                    "the backbone's own tokens; leave vision_adapter unset (or 'identity')")
        if self.text_encoder is not None and self.text_encoder not in TEXT_ENCODERS:
            _fail("text_encoder", f"got {self.text_encoder!r}; allowed: 'embeddings', 'full' (or None for the default)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.scan_backend):
            _fail("scan_backend", f"got {self.scan_backend!r}; use 'auto' or a backend name of modeling_mambavl.ops")
        if isinstance(self.time_step_rank, str) and self.time_step_rank != "auto":
            _fail("time_step_rank", f"got {self.time_step_rank!r}; allowed: 'auto' or a positive integer")

    def _check_numbers(self) -> None:
        for name in ("hidden_size", "state_size", "expand", "conv_kernel", "num_fusion_layers", "fuser_layers",
                     "fuser_heads", "fuser_max_position_embeddings", "num_verb_classes", "num_noun_classes"):
            _check_positive(name, getattr(self, name))
        for name in ("num_frames", "vision_feature_dim", "video_temporal_size", "image_size", "mixer_chunk_size",
                     "mixer_recompute_chunk_size"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if isinstance(self.time_step_rank, int):
            _check_positive("time_step_rank", self.time_step_rank)
        for name in ("text_embedding_dropout", "fuser_dropout", "fuser_drop_path", "head_dropout", "label_smoothing"):
            _check_probability(name, getattr(self, name))
        if not 0 < self.time_step_min <= self.time_step_max:
            _fail("time_step_min", f"need 0 < time_step_min <= time_step_max, got {self.time_step_min}, "
                                   f"{self.time_step_max}")
        if self.fusion_type == "transformer" and self.hidden_size % self.fuser_heads:
            _fail("fuser_heads", f"hidden_size {self.hidden_size} is not divisible by fuser_heads {self.fuser_heads}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                _fail(name, f"needs one value per RGB channel, got {value}")
            if value is not None and not all(math.isfinite(v) for v in value):
                _fail(name, f"needs finite numbers, got {value}")
        if self.image_std is not None and not all(v > 0 for v in self.image_std):
            _fail("image_std", f"needs positive standard deviations (frames are divided by them), got {self.image_std}")
        # Strictly positive: norms divide by sqrt(var + eps); a zero MLP ratio leaves the Fuser without an MLP.
        for name in ("fuser_mlp_ratio", "layer_norm_eps", "rms_norm_eps"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                _fail(name, f"must be a finite number > 0, got {getattr(self, name)}")
        for name in ("time_step_floor", "initializer_range"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                _fail(name, f"must be a finite number >= 0, got {getattr(self, name)}")
        if not math.isfinite(self.time_step_max):
            _fail("time_step_max", f"must be finite, got {self.time_step_max}")

    def _check_questions(self) -> None:
        self.question_types = tuple(self.question_types)
        if self.question_types not in QUESTION_TYPE_SETS:
            _fail("question_types", f"got {self.question_types}; allowed: ('verb', 'noun') or ('noun', 'verb') "
                                    "for EK100 heads, or ('action',) for one question and one head (with num_labels)")
        ids, mask = self.default_question_input_ids, self.default_question_attention_mask
        if ids is None:
            if mask is not None:
                _fail("default_question_attention_mask", "given without default_question_input_ids")
            return
        num = len(self.question_types)
        if len(ids) != num:
            _fail("default_question_input_ids", f"needs one row per question type {self.question_types} ({num} rows), "
                                                f"got {len(ids)}")
        if mask is not None:
            if [len(r) for r in mask] != [len(r) for r in ids]:
                _fail("default_question_attention_mask", f"row lengths {[len(r) for r in mask]} differ from "
                                                         f"default_question_input_ids' {[len(r) for r in ids]}")
            if any(v not in (0, 1) for row in mask for v in row):
                _fail("default_question_attention_mask", "entries must be 0 or 1")

    def _check_authors_options(self) -> None:
        if self.initializer == "authors_with_text" and not self.uses_questions:
            _fail("initializer", f"'authors_with_text' re-initialises the text model, and fusion_type="
                                 f"{self.fusion_type!r} has none; use 'authors'")
        if self.authors_text_encoder and self.text_encoder != "full":
            _fail("authors_text_encoder", f"applies to the whole text model (text_encoder='full', the baselines' "
                                          f"default), got text_encoder={self.text_encoder!r}")

    def _set_label_space(self, kwargs: dict[str, Any]) -> None:
        if self.question_types == ("action",):
            # One head over `num_labels` classes: transformers' own id2label / num_labels handling applies.
            return
        vocab = None
        if self.verb_id2label is None or self.noun_id2label is None or self.actions is None:
            is_ek100 = (self.num_verb_classes, self.num_noun_classes) == (97, 300)
            vocab = _ek100_vocabulary() if is_ek100 else None
            if vocab is None and self.actions is None:
                _fail("actions", f"give the (verb, noun) pair of every action class for num_verb_classes="
                                 f"{self.num_verb_classes}, num_noun_classes={self.num_noun_classes}"
                      + ("" if not is_ek100 else " (the EK100 defaults need the mambavl package installed)"))
        if self.verb_id2label is None:
            self.verb_id2label = vocab.verb_id2label() if vocab else {i: f"verb_{i}" for i in
                                                                      range(self.num_verb_classes)}
        if self.noun_id2label is None:
            self.noun_id2label = vocab.noun_id2label() if vocab else {i: f"noun_{i}" for i in
                                                                      range(self.num_noun_classes)}
        if self.actions is None:
            self.actions = [list(pair) for pair in vocab.actions]
        self.verb_id2label = _int_keyed("verb_id2label", self.verb_id2label, self.num_verb_classes)
        self.noun_id2label = _int_keyed("noun_id2label", self.noun_id2label, self.num_noun_classes)
        actions = [[int(v), int(n)] for v, n in self.actions]
        for i, (v, n) in enumerate(actions):
            if not (0 <= v < self.num_verb_classes and 0 <= n < self.num_noun_classes):
                _fail("actions", f"entry {i} = ({v}, {n}) is outside {self.num_verb_classes} verbs x "
                                 f"{self.num_noun_classes} nouns")
        if len({tuple(p) for p in actions}) != len(actions):
            _fail("actions", "contains duplicate (verb, noun) pairs")
        if not actions:
            _fail("actions", "needs at least one (verb, noun) pair")
        self.actions = actions
        num_labels = kwargs.pop("num_labels", None)
        if num_labels is not None and num_labels != len(actions):
            _fail("num_labels", f"{num_labels} disagrees with the {len(actions)} actions; the action classes are "
                                "defined by `actions` (num_labels is only for question_types=('action',))")
        # Action display names; never pass num_labels beside id2label.
        self.id2label = {i: f"{self.verb_id2label[v]} {self.noun_id2label[n]}" for i, (v, n) in enumerate(actions)}
        self.label2id = {name: i for i, name in self.id2label.items()}

    def _check_sub_config_dicts(self) -> None:
        # transformers builds these itself; its errors name the nested field alone ('hidden_size'), not ours.
        for name, default_type in (("vision_config", "videomae"), ("text_config", "roberta")):
            value = getattr(self, name)
            if isinstance(value, dict):
                fields = dict(value)
                model_type = fields.pop("model_type", default_type)
                try:
                    AutoConfig.for_model(model_type, **fields)
                except (ValueError, TypeError, KeyError, StrictDataclassError) as e:
                    _fail(name, f"not a valid {model_type!r} config: {e}")

    def _check_sub_configs(self) -> None:
        if self.text_config is not None and not isinstance(getattr(self.text_config, "hidden_size", None), int):
            _fail("text_config", f"{type(self.text_config).__name__} has no integer hidden_size")
        vision = self.vision_config
        if vision is None:
            if self.vision_feature_dim is None:
                self.vision_feature_dim = self.hidden_size
            if self.num_frames is None:
                self.num_frames = 16
            return
        width = getattr(vision, "hidden_size", None)
        if not isinstance(width, int):
            _fail("vision_config", f"{type(vision).__name__} has no integer hidden_size to size the video adapter")
        if self.vision_feature_dim is None:
            self.vision_feature_dim = width
        elif self.vision_feature_dim != width:
            _fail("vision_feature_dim", f"{self.vision_feature_dim} disagrees with vision_config.hidden_size {width}")
        backbone_frames = getattr(vision, "num_frames", None)
        if self.num_frames is None:
            self.num_frames = backbone_frames if isinstance(backbone_frames, int) else 16
        elif isinstance(backbone_frames, int) and backbone_frames != self.num_frames:
            _fail("num_frames", f"{self.num_frames} disagrees with vision_config.num_frames {backbone_frames}; "
                                "num_frames is the single source of truth: set both to the same value")

    def _check_question_pad_token_id(self) -> None:
        pad, vocab = self.question_pad_token_id, getattr(self.text_config, "vocab_size", None)
        if pad is None:
            return
        if pad < 0 or (isinstance(vocab, int) and pad >= vocab):
            _fail("question_pad_token_id", f"got {pad}; must be a token id of the text model's vocabulary "
                                           f"[0, {vocab}) (or None for text_config.pad_token_id)")

    def _check_vision_adapter(self) -> None:
        if self.vision_adapter == "identity" and self.vision_feature_dim != self.hidden_size:
            _fail("hidden_size", f"{self.hidden_size} differs from vision_feature_dim {self.vision_feature_dim}; with "
                                 f"vision_adapter='identity' (fusion_type={self.fusion_type!r}) the video tokens enter "
                                 f"the fusion and the heads unchanged: set hidden_size={self.vision_feature_dim}")

    # ------------------------------------------------------------------ derived properties
    @property
    def intermediate_size(self) -> int:
        """d_inner of the Mamba mixers."""
        return self.expand * self.hidden_size

    @property
    def dt_rank(self) -> int:
        return -(-self.hidden_size // 16) if self.time_step_rank == "auto" else int(self.time_step_rank)

    @property
    def uses_questions(self) -> bool:
        return self.fusion_type not in CONTROL_FUSION_TYPES

    @property
    def num_actions(self) -> int | None:
        return None if self.actions is None else len(self.actions)

    @property
    def video_layout(self) -> tuple[bool, str, int | None]:
        """(has CLS, order of the patch tokens "thw"/"hwt", temporal token positions) of the video tokens."""
        vision = self.vision_config
        known = _KNOWN_VIDEO_LAYOUTS.get(getattr(vision, "model_type", None))
        has_cls, order = known[:2] if known else (False, "thw")
        if self.video_has_cls is not None:
            has_cls = self.video_has_cls
        if self.video_token_order != "auto":
            order = self.video_token_order
        if vision is None:
            temporal = self.video_temporal_size or self.num_frames
        else:
            tubelet = known[2](vision) if known else getattr(vision, "tubelet_size", 1)
            tubelet = tubelet[0] if isinstance(tubelet, (list, tuple)) else tubelet
            temporal = self.num_frames // tubelet
        return has_cls, order, temporal

    # ------------------------------------------------------------------ construction / saving
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MambaVLConfig":
        """A named configuration: `tiny`, `timesformer-base`, `videomae-base`, `videomae-large`, `features-768`,
        `features-1024`; keyword arguments override its fields."""
        return cls(**preset_kwargs(name, overrides))

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save `config.json` together with the flat code bundle and its `auto_map`, so that the folder also loads
        with `trust_remote_code=True` where only transformers is installed."""
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        self.auto_map = save_code_bundle(save_directory)
        # A config re-saved from remote code has the pipeline file only if its code brought it along.
        has_pipeline = os.path.isfile(os.path.join(save_directory, PIPELINE_FILE))
        previous = self.__dict__.pop("custom_pipelines", None)
        if has_pipeline:
            self.custom_pipelines = {**(previous or {}), **CUSTOM_PIPELINES}
        try:
            super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            self.__dict__.pop("custom_pipelines", None)
            if previous is not None:
                self.custom_pipelines = previous


__all__ = ["MambaVLConfig"]

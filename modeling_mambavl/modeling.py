"""MambaVL models: ``MambaVLModel`` (video + questions -> fused states and pooled verb / noun features) and
``MambaVLForVideoClassification`` (+ verb and noun heads, joint action scores and the loss)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, is_tracing, logging

from .configuration import MambaVLConfig
from .configuration.presets import default_text_encoder
from .fusion import MambaVLSSMFusionLayer, MambaVLTransformerFusion, build_fusion
from .mixer import MambaVLMixer
from .questions import MambaVLQuestionEncoder
from .vision import MambaVLVisionAdapter

logger = logging.get_logger(__name__)


@dataclass
class MambaVLModelOutput(ModelOutput):
    """Output of [`MambaVLModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, N, D)`):
            Fused video token states (the video mixer's output for SSM fusion and the `"none"` control; the adapted
            video tokens for the baselines, only the CLS when the backbone has one).
        pooler_output (`torch.FloatTensor` of shape `(batch, Q, D)`):
            One pooled feature per question type, in `config.question_types` order.
        verb_features / noun_features (`torch.FloatTensor` of shape `(batch, D)`, *optional*):
            `pooler_output` of the verb and the noun question (absent in `("action",)` mode).
        question_last_hidden_state (`torch.FloatTensor` of shape `(batch, Q, L, D)`, *optional*):
            Fused question token states (SSM fusion; with `text_encoder="full"` the real tokens come first).
        video_attention_mask (`torch.LongTensor` of shape `(batch, N)`, *optional*): the mask of `last_hidden_state`.
        hidden_states / question_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Video (and question) token states before the fusion and after each fusion layer.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    verb_features: torch.FloatTensor | None = None
    noun_features: torch.FloatTensor | None = None
    question_last_hidden_state: torch.FloatTensor | None = None
    video_attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    question_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MambaVLVideoClassifierOutput(ModelOutput):
    """Output of [`MambaVLForVideoClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): CE(verb) + CE(noun) (or CE over `num_labels` in
            `("action",)` mode), with `config.label_smoothing`.
        logits (`torch.FloatTensor` of shape `(batch, num_actions)`):
            log-softmax(verb) + log-softmax(noun) of each action's (verb, noun) pair: a closed-vocabulary ranking of
            the actions of `config.actions` (official EK100 action metrics use the verb and noun logits). In
            `("action",)` mode, the classifier's logits `(batch, num_labels)`.
        verb_logits (`torch.FloatTensor` of shape `(batch, num_verb_classes)`, *optional*)
        noun_logits (`torch.FloatTensor` of shape `(batch, num_noun_classes)`, *optional*)
        verb_features / noun_features (`torch.FloatTensor` of shape `(batch, D)`, *optional*): the heads' inputs.
        last_hidden_state, question_last_hidden_state, hidden_states, question_hidden_states: as [`MambaVLModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    verb_logits: torch.FloatTensor | None = None
    noun_logits: torch.FloatTensor | None = None
    verb_features: torch.FloatTensor | None = None
    noun_features: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    question_last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    question_hidden_states: tuple[torch.FloatTensor, ...] | None = None


def _s4d_real_A_log(intermediate_size: int, state_size: int, device) -> torch.Tensor:
    """S4D-real initialisation: A = -(1..N) in every channel, stored as log(1..N)."""
    A = torch.arange(1, state_size + 1, dtype=torch.float32, device=device)
    return torch.log(A).expand(intermediate_size, -1).contiguous()


def _authors_reinit_(module: nn.Module, std: float = 0.02) -> None:
    """The authors' re-initialisation of one module's own parameters (not its children's), in their order.

    Their model classes end ``__init__`` with ``init_weights`` (xavier-uniform on every parameter of two or more
    dimensions) and then ``apply(_init_weights)`` (every ``nn.Linear``: trunc-normal weight of std ``std``, cut at
    ±2 as ``torch.nn.init.trunc_normal_``'s defaults, zero bias; every ``nn.LayerNorm``: weight 1, bias 0). Applied to
    every module of a model this gives the same distributions (random streams differ). One-dimensional parameters
    they do not reach keep their module's own init: a Mamba mixer's ``D`` = 1 and its conv bias as PyTorch's
    ``nn.Conv1d`` draws it (uniform in ±1/sqrt(fan_in)), since mamba-ssm leaves both so. Tensors loaded from a
    checkpoint are left alone (``transformers.initialization`` helpers)."""
    if isinstance(module, MambaVLMixer):
        init.ones_(module.D)
        fan_in = module.conv1d.weight.shape[1] * module.conv1d.weight.shape[2]
        init.uniform_(module.conv1d.bias, -fan_in**-0.5, fan_in**-0.5)
    for param in module.parameters(recurse=False):
        if param.dim() >= 2:
            init.xavier_uniform_(param)
    _reset_linear_or_norm_(module, std)


def _reset_linear_or_norm_(module: nn.Module, std: float) -> None:
    """An ``nn.Linear``: trunc-normal weight of std ``std``, zero bias; a LayerNorm / RMSNorm: weight 1, bias 0 (the
    scheme shared by this package's init and the authors'); other modules are left alone."""
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) or "RMSNorm" in type(module).__name__:
        init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)


def _load_frame_processor(source: str | os.PathLike) -> Any | None:
    """The backbone's video (or image) processor, if the folder / repository has one."""
    # Imported here: the processor stack pulls in torchvision, which loading a model never needs.
    from transformers import AutoImageProcessor, AutoVideoProcessor

    for auto_class in (AutoVideoProcessor, AutoImageProcessor):
        try:
            return auto_class.from_pretrained(source)
        except (OSError, ValueError, KeyError, TypeError, ImportError):
            continue
    return None


def _frame_settings(processor: Any) -> dict[str, Any]:
    """``image_size``, ``image_mean``, ``image_std`` (and ``num_frames`` when known) from a video/image processor."""
    settings: dict[str, Any] = {}
    def field(size, key):  # a dict, or transformers' SizeDict
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    sizes = [getattr(processor, "crop_size", None)] if getattr(processor, "do_center_crop", False) else []
    for size in sizes + [getattr(processor, "size", None)]:
        edge = None if size is None else field(size, "height") or field(size, "shortest_edge")
        if isinstance(edge, int):
            settings["image_size"] = edge
            break
    for key in ("image_mean", "image_std"):
        value = getattr(processor, key, None)
        if value is not None:
            settings[key] = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3)]
    if isinstance(getattr(processor, "num_frames", None), int):
        settings["num_frames"] = processor.num_frames
    return settings


def backbone_frame_settings(source: str | os.PathLike) -> dict[str, Any]:
    """``image_size`` / ``image_mean`` / ``image_std`` (and ``num_frames`` when known) from the video or image
    processor saved with a backbone (folder or repo id); ``{}`` when it has none."""
    processor = _load_frame_processor(source)
    return _frame_settings(processor) if processor is not None else {}


_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _refuse_pickled_only_folder(path: str | os.PathLike, subfolder: str = "") -> None:
    """A local folder with pickled weights and no safetensors: a clear error instead of transformers' generic one."""
    folder = os.path.join(os.fspath(path), subfolder or "")
    if not os.path.isdir(folder):
        return
    names = set(os.listdir(folder))
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return
    pickled = sorted(names.intersection(_PICKLED_WEIGHTS))
    if pickled:
        raise OSError(
            f"{os.path.join(folder, pickled[0])}: pickled PyTorch weights, and no model.safetensors beside them. "
            "Unpickling can run arbitrary code, so MambaVL loads safetensors only. If you trust this file, load it "
            "with from_pretrained(..., use_safetensors=False) and re-save it with save_pretrained (safetensors)."
        )


def _broken_safetensors_file(path: str | os.PathLike, subfolder: str = "") -> str:
    """The first unreadable ``*.safetensors`` file of a local folder (else the folder / repo id itself)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a transformers dependency
        return os.fspath(path)
    folder = os.path.join(os.fspath(path), subfolder or "")
    if not os.path.isdir(folder):
        return f"{os.fspath(path)} (a weights file of this repo)"
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(folder, name), framework="pt") as f:
                    f.keys()
            except Exception:  # SafetensorError, OSError
                return os.path.join(folder, name)
    return folder


def _check_question_values(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int | None) -> None:
    """Token ids inside the text model's vocabulary and at least one real token per question (CPU tensors)."""
    if vocab_size is not None and ((input_ids < 0) | (input_ids >= vocab_size)).any():
        bad = input_ids[(input_ids < 0) | (input_ids >= vocab_size)]
        raise ValueError(
            f"question_input_ids: token id {bad[0].item()} (min {input_ids.min().item()}, max "
            f"{input_ids.max().item()}) is outside the text model's vocabulary of {vocab_size} ids (0..{vocab_size - 1});"
            " tokenize with the checkpoint's processor"
        )
    empty = (attention_mask != 0).sum(-1) == 0
    if empty.any():
        b, q = (int(i) for i in empty.nonzero()[0])
        raise ValueError(f"question_attention_mask: question [{b}, {q}] has no real token (its mask is all 0); "
                         "every question needs at least one")


def _check_label_values(name: str, labels: torch.Tensor, num_classes: int, soft: bool) -> None:
    """Class ids in [0, num_classes) or -100 (ignored); soft targets finite, >= 0, each row summing to 1."""
    if not soft:
        bad = (labels != -100) & ((labels < 0) | (labels >= num_classes))
        if bad.any():
            raise ValueError(f"{name}: class id {labels[bad][0].item()} is out of range; expected ids in "
                             f"[0, {num_classes - 1}] (or -100 to ignore a clip)")
        return
    if not torch.isfinite(labels).all():
        raise ValueError(f"{name}: soft targets hold NaN or inf; expected finite probabilities")
    if (labels < 0).any():
        raise ValueError(f"{name}: soft target {labels.min().item():.4g} is negative; expected probabilities >= 0")
    sums = labels.double().sum(-1)
    off = (sums - 1).abs() > 1e-3
    if off.any():
        row = int(off.nonzero()[0])
        raise ValueError(f"{name}: soft targets of clip {row} sum to {sums[row].item():.6g}; each row must sum to 1")


class MambaVLPreTrainedModel(PreTrainedModel):
    config_class = MambaVLConfig
    base_model_prefix = "mambavl"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MambaVLSSMFusionLayer", "MambaVLFuserBlock"]

    def post_init(self) -> None:
        """Also keep only the ``_no_split_modules`` this model contains, and add its backbones' own.

        Accelerate's FSDP ``TRANSFORMER_BASED_WRAP`` wraps these classes by default and refuses a name the model does
        not contain (an SSM model has no ``MambaVLFuserBlock``). Wrapping at the fusion layer keeps the shared
        ``A_log`` in one FSDP unit with both mixers."""
        super().post_init()
        present = {type(m).__name__ for m in self.modules()}
        wanted = set(self._no_split_modules or ())
        for module in self.modules():
            if module is not self and isinstance(module, PreTrainedModel):
                wanted.update(module._no_split_modules or ())
        self._no_split_modules = {name for name in wanted if name in present}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, but safetensors only unless the caller opts in.

        Weights from strangers must never be unpickled: a folder or repo holding only ``pytorch_model.bin`` is
        refused. Pass ``use_safetensors=False`` to load pickled weights you trust (your own old checkpoints). The
        Auto classes go through here too."""
        kwargs.setdefault("use_safetensors", True)
        if kwargs["use_safetensors"] and pretrained_model_name_or_path is not None:
            _refuse_pickled_only_folder(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as e:
            if type(e).__name__ != "SafetensorError":  # safetensors' error names no file (matched by name: the
                raise  # remote-code bundle may import only what transformers allows)
            where = _broken_safetensors_file(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
            raise OSError(f"{where}: not a valid safetensors file ({e}); it is truncated or was altered. Download "
                          "or save the checkpoint again.") from e

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """transformers' ``push_to_hub`` (same arguments), with the MambaVL model card as ``README.md``.

        transformers' own push writes the repository's current card, or its empty template, over the README; with the
        package installed this one uploads the package's card instead (``modeling_mambavl.hub.push_model_with_card``:
        usage, links, licence, and the metrics and example clip of the folder the model was loaded from). Extra
        keywords (``processor``, ``metrics``, ``example_video``, ``space_id``, ``license``, ...) shape the card. The
        checkpoint's own code without the package falls back to transformers' push.
        """
        try:
            from .hub import push_model_with_card
        except ImportError:
            return super().push_to_hub(repo_id, **kwargs)
        return push_model_with_card(self, repo_id, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module, leaving loaded weights alone (the ``transformers.initialization`` helpers skip
        tensors read from a checkpoint), so the same rules also fill weights missing from a checkpoint.

        ``config.initializer`` picks the rules: ``"default"`` (below) or the authors' re-initialisation
        (:func:`_authors_reinit_`). Nested transformers models (the vision backbone, the text model) are initialised by
        their own classes (see ``initialize_weights`` for the text model under ``"authors_with_text"``)."""
        if isinstance(module, MambaVLForVideoClassification) and module.action_verb is not None:
            # Not weights: the action table is refilled whatever the initializer (it is not saved).
            init.copy_(module.action_verb, module._action_table()[0])
            init.copy_(module.action_noun, module._action_table()[1])
        if self.config.initializer == "default":
            self._default_init(module)
            return
        _authors_reinit_(module, self.config.initializer_range)

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """transformers' pass over every module (``_init_weights``); then, for ``initializer="authors_with_text"``,
        the authors' re-initialisation of the text model, which its own class initialised in that pass (a nested
        transformers model is dispatched to its own ``_init_weights``), as their code overwrote RoBERTa's weights
        after loading them. Tensors loaded from a checkpoint stay as loaded."""
        super().initialize_weights()
        questions = getattr(getattr(self, self.base_model_prefix, self), "questions", None)
        if self.config.initializer == "authors_with_text" and questions is not None:
            for module in questions.text_model.modules():
                _authors_reinit_(module, self.config.initializer_range)

    def _default_init(self, module: nn.Module) -> None:
        """S4D-real A, Mamba's Δ init, trunc-normal Linear layers, norms reset (``initializer="default"``)."""
        std = self.config.initializer_range
        if isinstance(module, MambaVLMixer):
            # As mamba-ssm: default PyTorch Linear / conv init, D = 1, S4D-real A, Δ bias = softplus^-1 of a
            # log-uniform time step in [time_step_min, time_step_max].
            for linear in (module.in_proj, module.x_proj, module.out_proj):
                init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
            init.kaiming_uniform_(module.conv1d.weight, a=math.sqrt(5))
            init.zeros_(module.conv1d.bias)
            dt_std = module.dt_rank**-0.5
            init.uniform_(module.dt_proj.weight, -dt_std, dt_std)
            config = self.config
            device = module.dt_proj.bias.device
            dt = torch.exp(
                torch.rand(module.intermediate_size, dtype=torch.float32, device=device)
                * (math.log(config.time_step_max) - math.log(config.time_step_min))
                + math.log(config.time_step_min)
            ).clamp(min=config.time_step_floor)
            init.copy_(module.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))
            init.ones_(module.D)
            if module.A_log is not None:
                init.copy_(module.A_log, _s4d_real_A_log(module.intermediate_size, module.state_size, device))
        elif isinstance(module, MambaVLSSMFusionLayer):
            if module.A_log is not None:
                init.copy_(module.A_log, _s4d_real_A_log(module.A_log.shape[0], module.A_log.shape[1], module.A_log.device))
        elif isinstance(module, MambaVLTransformerFusion):
            for param in (module.cls_token_video, module.cls_token_text, module.pos_embed_video,
                          module.pos_embed_text, module.type_video, module.type_text):
                init.trunc_normal_(param, std=std)
        else:
            # Mixer projections are visited first (children before parents) and re-initialised with their mixer.
            _reset_linear_or_norm_(module, std)

    @classmethod
    def from_backbones(
        cls,
        vision: str | os.PathLike | PreTrainedModel | None = None,
        text: str | os.PathLike | PreTrainedModel | None = None,
        use_safetensors: bool = True,
        **config_kwargs: Any,
    ):
        """Build a MambaVL model on pretrained transformers backbones.

        Args:
            vision: name / path of a pretrained video model (TimeSformer, VideoMAE, ...) or a loaded one; `None` for
                pre-extracted features. `num_frames`, the frame size and mean / std come from its processor and config.
            text: name / path of a pretrained text model (or a loaded one). With `text_encoder="embeddings"` (the
                SSM default) only its embeddings run, so it is loaded with 0 layers.
            use_safetensors: backbones are read from safetensors only; `False` allows pickled weights you trust.
            config_kwargs: any other `MambaVLConfig` field (`fusion_type`, `hidden_size`, ...).
        """
        kwargs = dict(config_kwargs)
        if text is not None and kwargs.get("initializer") == "authors_with_text":
            raise ValueError(
                f"from_backbones(text={text!r}, initializer='authors_with_text'): that initializer overwrites the "
                "text model's weights, as the authors' code did, so the pretrained ones would never be used. Drop "
                "text= (the model builds its text model from text_config), or use initializer='authors' to keep them."
            )
        vision_model = None
        if vision is not None:
            vision_model = vision if isinstance(vision, PreTrainedModel) else AutoModel.from_pretrained(
                vision, use_safetensors=use_safetensors)
            settings = {} if isinstance(vision, PreTrainedModel) else backbone_frame_settings(vision)
            backbone_frames = getattr(vision_model.config, "num_frames", None)
            if isinstance(backbone_frames, int):
                settings["num_frames"] = backbone_frames
            for key, value in settings.items():
                kwargs.setdefault(key, value)
            kwargs["vision_config"] = vision_model.config
        text_model = None
        if text is not None:
            text_encoder = kwargs.get("text_encoder") or default_text_encoder(kwargs.get("fusion_type", "ssm"))
            if isinstance(text, PreTrainedModel):
                text_model = text
            else:
                text_config = AutoConfig.from_pretrained(text)
                extra = {"num_hidden_layers": 0} if (text_encoder == "embeddings" and
                                                      hasattr(text_config, "num_hidden_layers")) else {}
                text_model = AutoModel.from_pretrained(text, use_safetensors=use_safetensors, **extra)
            kwargs["text_config"] = text_model.config
        model = cls(MambaVLConfig(**kwargs))
        base = getattr(model, cls.base_model_prefix, model)
        if vision_model is not None:
            base.vision.backbone = vision_model
        if text_model is not None and base.questions is not None:
            base.questions.text_model = text_model
            if base.config.freeze_text_encoder:
                text_model.requires_grad_(False)
        model.train(model.training)
        return model


class MambaVLModel(MambaVLPreTrainedModel):
    """MambaVL without heads: video tokens and questions -> fused token states and one pooled feature per question.

    Submodules: `vision` (backbone + adapter), `questions` (text model + text MLP; absent for the question-free
    controls) and `fusion` (see `modeling_mambavl.fusion`).
    """

    def __init__(self, config: MambaVLConfig) -> None:
        super().__init__(config)
        self.vision = MambaVLVisionAdapter(config)
        self.questions = MambaVLQuestionEncoder(config) if config.uses_questions else None
        self.fusion = build_fusion(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module | None:
        return None if self.questions is None else self.questions.text_model.get_input_embeddings()

    def _default_questions(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        rows = config.default_question_input_ids
        if rows is None:
            raise ValueError(
                "question_input_ids: none were given, and the model has no default questions "
                "(config.default_question_input_ids is not set). Give the model what its MambaVLProcessor makes: "
                "processor(videos=..., return_tensors='pt') returns the question ids with the frames. For "
                "pipeline('video-classification'), save the whole MambaVLProcessor in the model's folder "
                "(processor.save_pretrained(folder); a video processor saved alone carries no questions), or load "
                "both with modeling_mambavl.saving.load_model_and_processor(folder), which sets the default questions."
            )
        masks = config.default_question_attention_mask or [[1] * len(row) for row in rows]
        length = max(len(row) for row in rows)
        pad = self._question_pad_id()
        pad = 0 if pad is None else pad
        ids = torch.full((len(rows), length), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)
        for i, (row, row_mask) in enumerate(zip(rows, masks)):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
            mask[i, : len(row)] = torch.tensor(row_mask, dtype=torch.long, device=device)
        return ids.expand(batch, -1, -1), mask.expand(batch, -1, -1)

    def _question_pad_id(self) -> int | None:
        """The questions' pad id: ``config.question_pad_token_id``, else ``text_config.pad_token_id``."""
        pad = self.config.question_pad_token_id
        return pad if pad is not None else getattr(self.config.text_config, "pad_token_id", None)

    def _question_mask_from_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(…, L) ids without a mask -> their mask, ``input_ids != pad id`` (all ones when no pad id is known).

        As the authors' RoBERTa derives positions from ``ids != pad``, and as transformers warns
        (``warn_if_padding_and_no_attention_mask``): once, when padding is found."""
        pad = self._question_pad_id()
        if pad is None:
            return torch.ones_like(input_ids)
        mask = (input_ids != pad).long()
        # Reading the mask's values would synchronise a GPU at every step: the warning is a CPU-side courtesy.
        if input_ids.device.type == "cpu" and not is_tracing(input_ids) and not bool(mask.all()):
            logger.warning_once(
                f"question_input_ids contain the pad id {pad} and no question_attention_mask was given: the mask is "
                f"taken as question_input_ids != {pad} (config.question_pad_token_id, else text_config.pad_token_id). "
                "Pass question_attention_mask (the processor returns it) to set it yourself."
            )
        return mask

    def _question_inputs(self, input_ids, attention_mask, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        num = len(self.config.question_types)
        if input_ids is None:
            if attention_mask is not None:
                raise ValueError("question_attention_mask: given without question_input_ids")
            return self._default_questions(batch, device)
        if input_ids.dim() == 2 and num == 1:
            input_ids = input_ids.unsqueeze(1)
            attention_mask = attention_mask.unsqueeze(1) if attention_mask is not None else None
        expected = f"(batch={batch}, {num}, length) for question_types {self.config.question_types}"
        if input_ids.dim() != 3 or input_ids.shape[0] != batch or input_ids.shape[1] != num:
            raise ValueError(f"question_input_ids: expected shape {expected}, got {tuple(input_ids.shape)}")
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise ValueError(f"question_input_ids: expected integer token ids, got {input_ids.dtype}")
        if attention_mask is None:
            attention_mask = self._question_mask_from_ids(input_ids)
        elif tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"question_attention_mask: expected the shape of question_input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        limit = self.questions.max_length
        if input_ids.shape[-1] == 0 or (limit is not None and input_ids.shape[-1] > limit):
            raise ValueError(
                f"question_input_ids: questions of length {input_ids.shape[-1]} (shape {tuple(input_ids.shape)}); the "
                f"text model takes 1 to {limit} tokens (max_position_embeddings). Tokenize with MambaVLProcessor, "
                f"which truncates to the tokenizer's model_max_length, or pass max_length<={limit}"
            )
        if input_ids.device.type == "cpu":
            _check_question_values(input_ids, attention_mask, self.questions.vocab_size)
        return input_ids.long(), attention_mask.long()

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_attention_mask: torch.LongTensor | None = None,
        question_input_ids: torch.LongTensor | None = None,
        question_attention_mask: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        **kwargs: Any,
    ) -> MambaVLModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, num_frames, channels, height, width)`):
                Frames for the vision backbone (`pixel_values_videos` is accepted as an alias).
            video_features (`torch.FloatTensor` of shape `(batch, tokens, vision_feature_dim)`):
                Pre-extracted video tokens (models without a vision backbone), with an optional
                `video_attention_mask` `(batch, tokens)`.
            question_input_ids / question_attention_mask (`torch.LongTensor` of shape `(batch, Q, length)`):
                One tokenized question per entry of `config.question_types`, right-padded (any padding works);
                without them, the config's default questions. Ids without a mask get `ids != pad id`
                (`config.question_pad_token_id`, else `text_config.pad_token_id`; a one-time warning says so).
        """
        config = self.config
        if pixel_values_videos is not None:
            if pixel_values is not None:
                raise ValueError("pixel_values / pixel_values_videos: give one of the two, not both")
            pixel_values = pixel_values_videos
        if (pixel_values is None) == (video_features is None):
            raise ValueError("MambaVLModel: give exactly one of pixel_values (batch, T, C, H, W) or video_features "
                             "(batch, tokens, vision_feature_dim)")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        video_input = pixel_values if pixel_values is not None else video_features
        batch = video_input.shape[0]
        if batch == 0:
            name = "pixel_values" if pixel_values is not None else "video_features"
            raise ValueError(f"{name}: an empty batch (shape {tuple(video_input.shape)}); give at least one clip")

        cls_only = self.fusion.question_input == "pooled" and config.video_layout[0]
        # Profiler ranges ("mambavl.*", see BENCHMARKS.md) cost nothing measurable when no profiler runs.
        video, video_mask = self.vision(pixel_values, video_features, video_attention_mask, cls_only=cls_only)

        questions = question_mask = None
        if self.questions is not None:
            with record_function("mambavl.questions"):
                ids, mask = self._question_inputs(question_input_ids, question_attention_mask, batch, video.device)
                num, length = ids.shape[1], ids.shape[2]
                pooled = self.fusion.question_input == "pooled"
                questions, mask = self.questions(ids.reshape(-1, length), mask.reshape(-1, length), pooled=pooled)
                questions = questions.reshape(batch, num, *questions.shape[1:])
                mask = mask.reshape(batch, num, length)
                # The authors' pooling ignores the mask; kept only to run their checkpoints.
                question_mask = None if config.question_pooling == "include_padding" else mask

        with record_function("mambavl.fusion"):
            fused = self.fusion(video, video_mask, questions, question_mask,
                                output_hidden_states=output_hidden_states)
        features = {name: fused.pooled[:, i] for i, name in enumerate(config.question_types)}
        output = MambaVLModelOutput(
            last_hidden_state=fused.video_states,
            pooler_output=fused.pooled,
            verb_features=features.get("verb"),
            noun_features=features.get("noun"),
            question_last_hidden_state=fused.question_states,
            video_attention_mask=video_mask,
            hidden_states=fused.video_hidden_states,
            question_hidden_states=fused.question_hidden_states,
        )
        return output if return_dict else output.to_tuple()


class MambaVLForVideoClassification(MambaVLPreTrainedModel):
    """MambaVL with a verb head Linear(D, num_verb_classes) on the verb-question feature and a noun head
    Linear(D, num_noun_classes) on the noun-question feature (or one `classifier` in `("action",)` mode)."""

    def __init__(self, config: MambaVLConfig) -> None:
        super().__init__(config)
        self.mambavl = MambaVLModel(config)
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.single_head = config.question_types == ("action",)
        if self.single_head:
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
            self.register_buffer("action_verb", None, persistent=False)
            self.register_buffer("action_noun", None, persistent=False)
        else:
            self.verb_head = nn.Linear(config.hidden_size, config.num_verb_classes)
            self.noun_head = nn.Linear(config.hidden_size, config.num_noun_classes)
            # Action id -> (verb, noun); not saved (it is the config's `actions`), refilled by _init_weights on load.
            verbs, nouns = self._action_table()
            self.register_buffer("action_verb", verbs, persistent=False)
            self.register_buffer("action_noun", nouns, persistent=False)
        self.post_init()

    def _action_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        table = torch.tensor(self.config.actions, dtype=torch.long).reshape(-1, 2)
        return table[:, 0].contiguous(), table[:, 1].contiguous()

    @staticmethod
    def _check_labels(name: str, labels: torch.Tensor, batch: int, num_classes: int,
                      check_values: bool = True) -> torch.Tensor:
        """Shapes always; values (range, finiteness, sums) only for CPU tensors, which the collator and the
        processor hand over: a check of device tensors would synchronise the device at every step."""
        hard = labels.dim() == 1 and not labels.is_floating_point() and labels.dtype != torch.bool
        soft = labels.dim() == 2 and labels.is_floating_point() and labels.shape[1] == num_classes
        if labels.shape[0] != batch or not (hard or soft):
            raise ValueError(
                f"{name}: expected class ids of shape ({batch},) or soft targets of shape ({batch}, {num_classes}) "
                f"(float), got {tuple(labels.shape)} {labels.dtype}"
            )
        if check_values and labels.device.type == "cpu":
            _check_label_values(name, labels, num_classes, soft)
        return labels.long() if hard else labels.float()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_attention_mask: torch.LongTensor | None = None,
        question_input_ids: torch.LongTensor | None = None,
        question_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        verb_labels: torch.Tensor | None = None,
        noun_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        **kwargs: Any,
    ) -> MambaVLVideoClassifierOutput | tuple:
        r"""
        Args (besides those of [`MambaVLModel.forward`]):
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Action ids (rows of `config.actions`), mapped to their verb and noun; in `("action",)` mode the class
                ids (or soft targets `(batch, num_labels)`).
            verb_labels / noun_labels (`torch.Tensor` of shape `(batch,)` or `(batch, classes)`, *optional*):
                Verb / noun class ids, or soft targets (e.g. under mixup). The loss is CE(verb) + CE(noun) with
                `config.label_smoothing`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.mambavl(
            pixel_values=pixel_values,
            video_features=video_features,
            video_attention_mask=video_attention_mask,
            question_input_ids=question_input_ids,
            question_attention_mask=question_attention_mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            pixel_values_videos=pixel_values_videos,
        )
        with record_function("mambavl.heads"):
            features = self.head_dropout(outputs.pooler_output)
            batch = features.shape[0]
            loss = verb_logits = noun_logits = None
            if self.single_head:
                if verb_labels is not None or noun_labels is not None:
                    raise ValueError("verb_labels / noun_labels: this model has one head (question_types=('action',)); "
                                     "pass labels")
                logits = self.classifier(features[:, 0])
                if labels is not None:
                    loss = self._loss(logits, self._check_labels("labels", labels, batch, self.config.num_labels))
            else:
                index = {name: i for i, name in enumerate(self.config.question_types)}
                verb_logits = self.verb_head(features[:, index["verb"]])
                noun_logits = self.noun_head(features[:, index["noun"]])
                logits = (
                    F.log_softmax(verb_logits.float(), dim=-1)[:, self.action_verb]
                    + F.log_softmax(noun_logits.float(), dim=-1)[:, self.action_noun]
                )
                if labels is not None:
                    if verb_labels is not None or noun_labels is not None:
                        raise ValueError("labels: give either action labels or verb_labels / noun_labels, not both")
                    # values: the action-id check below (no -100 here: an action id indexes the action table)
                    labels = self._check_labels("labels", labels, batch, len(self.config.actions), check_values=False)
                    if labels.is_floating_point():
                        raise ValueError("labels: soft action targets are not supported; give soft verb_labels and "
                                         "noun_labels instead")
                    num_actions = self.action_verb.shape[0]
                    if labels.device.type == "cpu" and ((labels < 0) | (labels >= num_actions)).any():
                        bad = labels[(labels < 0) | (labels >= num_actions)][0].item()
                        raise ValueError(f"labels: action ids must be in [0, {num_actions}); got {bad}")
                    verb_labels, noun_labels = self.action_verb[labels], self.action_noun[labels]
                terms = []
                if verb_labels is not None:
                    verb_labels = self._check_labels("verb_labels", verb_labels, batch, self.config.num_verb_classes)
                    terms.append(self._loss(verb_logits, verb_labels))
                if noun_labels is not None:
                    noun_labels = self._check_labels("noun_labels", noun_labels, batch, self.config.num_noun_classes)
                    terms.append(self._loss(noun_logits, noun_labels))
                loss = sum(terms) if terms else None

        output = MambaVLVideoClassifierOutput(
            loss=loss,
            logits=logits,
            verb_logits=verb_logits,
            noun_logits=noun_logits,
            verb_features=outputs.verb_features,
            noun_features=outputs.noun_features,
            last_hidden_state=outputs.last_hidden_state,
            question_last_hidden_state=outputs.question_last_hidden_state,
            hidden_states=outputs.hidden_states,
            question_hidden_states=outputs.question_hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "MambaVLPreTrainedModel",
    "MambaVLModel",
    "MambaVLForVideoClassification",
    "MambaVLModelOutput",
    "MambaVLVideoClassifierOutput",
    "backbone_frame_settings",
]

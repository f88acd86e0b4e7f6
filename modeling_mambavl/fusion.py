"""Fusion of video tokens and questions: the paper's SSM fusion with a shared state matrix, the authors' Transformer
("Fuser") and MLP baselines, and the question-free controls.

Every fusion module maps the adapted video tokens (batch, N, D) and the questions (token states (batch, Q, L, D) for
SSM fusion, pooled vectors (batch, Q, D) for the baselines) to one pooled feature per question (batch, Q, D); the
classification heads read ``pooled[:, q]`` for question type ``q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .mixer import MambaVLMixer, MambaVLRMSNorm


def masked_mean(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (batch, L, D), counting only positions where ``mask`` (batch, L) is 1."""
    if mask is None:
        return hidden_states.mean(dim=1)
    weights = mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@dataclass
class FusionOutput:
    """pooled (batch, Q, D); video_states (batch, N, D); question_states (batch, Q, L, D) or None; per-layer states
    (input first) when asked."""

    pooled: torch.Tensor
    video_states: torch.Tensor
    question_states: torch.Tensor | None = None
    video_hidden_states: tuple[torch.Tensor, ...] | None = None
    question_hidden_states: tuple[torch.Tensor, ...] | None = None


class MambaVLSSMFusionLayer(GradientCheckpointingLayer):
    """One video mixer and one text mixer reading the one ``A_log`` (d_inner, N) held here.

    ``residual=False`` is the paper's block (mixers alone, no norm, no residual); ``residual=True`` wraps each
    mixer as ``x + mixer(RMSNorm(x))`` for deeper stacks. With ``share_state_matrix=False`` each mixer owns an
    ``A_log`` and this layer holds none; with ``with_text=False`` (the ``"none"`` control) only the video mixer exists.
    """

    def __init__(self, config, residual: bool, with_text: bool = True) -> None:
        super().__init__()
        self.share_state_matrix = config.share_state_matrix
        self.residual = residual
        if self.share_state_matrix:
            self.A_log = nn.Parameter(torch.empty(config.intermediate_size, config.state_size))
        else:
            self.register_parameter("A_log", None)

        def mixer() -> MambaVLMixer:
            return MambaVLMixer(
                config.hidden_size, config.intermediate_size, config.state_size, config.conv_kernel, config.dt_rank,
                owns_state_matrix=not self.share_state_matrix, scan_backend=config.scan_backend,
                chunk_size=config.mixer_chunk_size, recompute=config.mixer_recompute,
                recompute_chunk_size=config.mixer_recompute_chunk_size,
            )

        self.video_mixer = mixer()
        self.text_mixer = mixer() if with_text else None
        if residual:
            self.video_norm = MambaVLRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.text_norm = MambaVLRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if with_text else None

    def _mix(self, mixer, norm, hidden_states, mask):
        if not self.residual:
            return mixer(hidden_states, mask, self.A_log)
        return hidden_states + mixer(norm(hidden_states), mask, self.A_log)

    def forward(
        self,
        video: torch.Tensor,
        text: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video (batch, N, D), text (n, L, D) (all questions of the batch together) -> the same shapes."""
        video = self._mix(self.video_mixer, getattr(self, "video_norm", None), video, video_mask)
        if text is not None:
            text = self._mix(self.text_mixer, getattr(self, "text_norm", None), text, text_mask)
        return video, text


class MambaVLSSMFusion(nn.Module):
    """SSM fusion (``fusion_type="ssm"``): z_q = mean(video mixer output) + mean(text mixer output of question q).

    With ``with_text=False`` it is the ``"none"`` control: the video Mamba alone, z = mean(video mixer output) for
    every head.
    """

    question_input = "tokens"

    def __init__(self, config, with_text: bool = True) -> None:
        super().__init__()
        self.with_text = with_text
        self.num_heads = len(config.question_types)
        residual = config.num_fusion_layers > 1
        self.layers = nn.ModuleList(
            [MambaVLSSMFusionLayer(config, residual, with_text) for _ in range(config.num_fusion_layers)]
        )
        if residual:
            # A pre-norm residual stack ends with a norm, as in Mamba.
            self.video_norm = MambaVLRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.text_norm = MambaVLRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if with_text else None
        else:
            self.video_norm = self.text_norm = None

    def forward(
        self,
        video: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
        question_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        """video (batch, N, D); questions (batch, Q, L, D) and question_mask (batch, Q, L), ignored by the control."""
        batch = video.shape[0]
        text = text_mask = None
        if self.with_text:
            if questions is None:
                raise ValueError("SSM fusion needs question token states (batch, Q, L, D)")
            num_questions, length = questions.shape[1], questions.shape[2]
            # Every question of the batch runs through the one text mixer together.
            text = questions.reshape(batch * num_questions, length, questions.shape[-1])
            text_mask = None if question_mask is None else question_mask.reshape(batch * num_questions, length)
        video_states, text_states = [video], [text]
        for layer in self.layers:
            video, text = layer(video, text, video_mask, text_mask)
            video_states.append(video)
            text_states.append(text)
        if self.video_norm is not None:
            video = self.video_norm(video)
            text = self.text_norm(text) if text is not None else None
        video_pooled = masked_mean(video, video_mask)  # (batch, D)
        if not self.with_text:
            return FusionOutput(
                pooled=video_pooled.unsqueeze(1).expand(batch, self.num_heads, -1),
                video_states=video,
                video_hidden_states=tuple(video_states) if output_hidden_states else None,
            )
        question_pooled = masked_mean(text, text_mask).reshape(batch, num_questions, -1)
        unflatten = lambda t: t.reshape(batch, num_questions, length, -1)  # noqa: E731
        return FusionOutput(
            pooled=video_pooled.unsqueeze(1) + question_pooled,
            video_states=video,
            question_states=unflatten(text),
            video_hidden_states=tuple(video_states) if output_hidden_states else None,
            question_hidden_states=tuple(unflatten(t) for t in text_states) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------------------------------
# The authors' baselines: the Transformer "Fuser" and the MLP, both over the video CLS (or the mean video token when the
# backbone has no CLS) and the pooled output of the full text model.


def _drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep).div_(keep)


class MambaVLMLP(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class MambaVLFuserAttention(nn.Module):
    """Multi-head self-attention (qkv without bias, as the authors' Fuser), computed with SDPA."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float, proj_dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(proj_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (batch, heads, L, head_dim) each
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class MambaVLFuserBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm Transformer block (LayerNorm eps 1e-6, MLP ratio 4, GELU, stochastic depth)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MambaVLFuserAttention(dim, num_heads, dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MambaVLMLP(dim, int(dim * mlp_ratio), dim, dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + _drop_path(self.attn(self.norm1(hidden_states)), self.drop_path, self.training)
        return hidden_states + _drop_path(self.mlp(self.norm2(hidden_states)), self.drop_path, self.training)


class MambaVLTransformerFusion(nn.Module):
    """The authors' Transformer "Fuser" (``fusion_type="transformer"``).

    Per question: [video CLS*, video token] + [text CLS*, question vector] (* learned), plus learned position tables
    (5,000 entries per modality) and type embeddings, through ``fuser_layers`` blocks of ``fuser_heads`` heads; the
    output is the fused learned video CLS.
    """

    question_input = "pooled"

    def __init__(self, config) -> None:
        super().__init__()
        dim, positions = config.hidden_size, config.fuser_max_position_embeddings
        self.has_cls = config.video_layout[0]
        self.cls_token_video = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_token_text = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed_video = nn.Parameter(torch.zeros(1, positions, dim))
        self.pos_embed_text = nn.Parameter(torch.zeros(1, positions, dim))
        self.type_video = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_text = nn.Parameter(torch.zeros(1, 1, dim))
        self.embed_dropout = nn.Dropout(config.fuser_dropout)
        # Stochastic depth rising linearly to fuser_drop_path (plain Python: the model may be built on meta).
        rates = [config.fuser_drop_path * i / max(config.fuser_layers - 1, 1) for i in range(config.fuser_layers)]
        self.blocks = nn.ModuleList(
            [
                MambaVLFuserBlock(dim, config.fuser_heads, config.fuser_mlp_ratio, config.fuser_dropout, rate)
                for rate in rates
            ]
        )

    def fuse(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """video (n, Nv, D), text (n, Nt, D) -> the fused learned video CLS (n, D)."""
        n = video.shape[0]
        video = torch.cat([self.cls_token_video.expand(n, -1, -1), video], dim=1)
        text = torch.cat([self.cls_token_text.expand(n, -1, -1), text], dim=1)
        video = video + self.pos_embed_video[:, : video.shape[1]] + self.type_video
        text = text + self.pos_embed_text[:, : text.shape[1]] + self.type_text
        hidden_states = self.embed_dropout(torch.cat([video, text], dim=1))
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states[:, 0]

    def forward(
        self,
        video: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
        question_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        """video (batch, N, D) (N = 1 when only the CLS was adapted); questions (batch, Q, D) pooled vectors."""
        batch, num_questions, dim = questions.shape
        video_token = _video_summary(video, video_mask, self.has_cls)
        fused = self.fuse(
            video_token.unsqueeze(1).repeat_interleave(num_questions, dim=0),
            questions.reshape(batch * num_questions, 1, dim),
        )
        return FusionOutput(
            pooled=fused.reshape(batch, num_questions, dim),
            video_states=video,
            video_hidden_states=(video,) if output_hidden_states else None,
        )


class MambaVLMLPFusion(nn.Module):
    """The authors' MLP fusion (``fusion_type="mlp"``): MLP(2D -> 2D -> D) over [video CLS; question vector]."""

    question_input = "pooled"

    def __init__(self, config) -> None:
        super().__init__()
        dim = config.hidden_size
        self.has_cls = config.video_layout[0]
        self.mlp = MambaVLMLP(2 * dim, 2 * dim, dim)

    def forward(self, video, video_mask=None, questions=None, question_mask=None, output_hidden_states=False):
        batch, num_questions, dim = questions.shape
        video_token = _video_summary(video, video_mask, self.has_cls).unsqueeze(1).expand(-1, num_questions, -1)
        return FusionOutput(
            pooled=self.mlp(torch.cat([video_token, questions], dim=-1)),
            video_states=video,
            video_hidden_states=(video,) if output_hidden_states else None,
        )


class MambaVLMeanMLPControl(nn.Module):
    """Control ``fusion_type="mean_mlp"``: no questions, no Mamba; z = MLP(mean of the video tokens) for every head."""

    question_input = None

    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = len(config.question_types)
        self.mlp = MambaVLMLP(config.hidden_size, 2 * config.hidden_size, config.hidden_size)

    def forward(self, video, video_mask=None, questions=None, question_mask=None, output_hidden_states=False):
        pooled = self.mlp(masked_mean(video, video_mask))
        return FusionOutput(
            pooled=pooled.unsqueeze(1).expand(-1, self.num_heads, -1),
            video_states=video,
            video_hidden_states=(video,) if output_hidden_states else None,
        )


class MambaVLLinearProbe(nn.Module):
    """Control ``fusion_type="linear_probe"``: no questions, no Mamba; z = LayerNorm(pooled backbone output) for every
    head, so each head is a linear classifier on the backbone's pooled output.

    The pooled output is the backbone's CLS token, or the (masked) mean token when it has none, read from the
    backbone's own tokens (``vision_adapter="identity"``); the LayerNorm is the usual normalisation of a probe (as
    VideoMAE's ``fc_norm`` and the final norms of CLIP / Motionformer before their classifiers).
    """

    question_input = None

    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = len(config.question_types)
        self.has_cls = config.video_layout[0]
        self.norm = nn.LayerNorm(config.vision_feature_dim, eps=config.layer_norm_eps)

    def forward(self, video, video_mask=None, questions=None, question_mask=None, output_hidden_states=False):
        """video (batch, N, D_v), the backbone's tokens -> pooled (batch, Q, D_v), the same vector for every head."""
        pooled = self.norm(_video_summary(video, video_mask, self.has_cls))
        return FusionOutput(
            pooled=pooled.unsqueeze(1).expand(-1, self.num_heads, -1),
            video_states=video,
            video_hidden_states=(video,) if output_hidden_states else None,
        )


def _video_summary(video: torch.Tensor, video_mask: torch.Tensor | None, has_cls: bool) -> torch.Tensor:
    """The video CLS (first token), or the mean token when the backbone has no CLS: (batch, N, D) -> (batch, D)."""
    return video[:, 0] if has_cls else masked_mean(video, video_mask)


def build_fusion(config) -> nn.Module:
    """The fusion module of ``config.fusion_type``."""
    if config.fusion_type == "ssm":
        return MambaVLSSMFusion(config)
    if config.fusion_type == "none":
        return MambaVLSSMFusion(config, with_text=False)
    if config.fusion_type == "transformer":
        return MambaVLTransformerFusion(config)
    if config.fusion_type == "mlp":
        return MambaVLMLPFusion(config)
    if config.fusion_type == "mean_mlp":
        return MambaVLMeanMLPControl(config)
    if config.fusion_type == "linear_probe":
        return MambaVLLinearProbe(config)
    raise ValueError(
        f"fusion_type {config.fusion_type!r} is not one of ssm, transformer, mlp, none, mean_mlp, linear_probe"
    )

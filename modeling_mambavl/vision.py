"""The video branch: any transformers video backbone (or pre-extracted features), re-ordered to one canonical token
order, then LayerNorm + Linear(D_v, D) + tanh (or nothing, with ``vision_adapter="identity"``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.profiler import record_function
from transformers import AutoModel


def to_canonical_order(tokens: torch.Tensor, has_cls: bool, order: str, temporal_size: int | None) -> torch.Tensor:
    """Re-order video tokens (batch, N, ...) to [CLS] + frame-major (t, h, w).

    ``order="hwt"`` (patch-major, time-minor, as transformers' TimeSformer) is transposed; ``"thw"`` is already
    canonical. Works on (batch, N) masks too.
    """
    if order == "thw":
        return tokens
    head, patches = (tokens[:, :1], tokens[:, 1:]) if has_cls else (None, tokens)
    num = patches.shape[1]
    if not temporal_size or num % temporal_size:
        raise ValueError(
            f"video tokens: {num} patch tokens cannot be split into {temporal_size} temporal positions for the 'hwt' "
            "order; check num_frames / video_temporal_size / video_has_cls"
        )
    spatial = num // temporal_size
    rest = patches.shape[2:]
    patches = patches.reshape(patches.shape[0], spatial, temporal_size, *rest).transpose(1, 2)
    patches = patches.reshape(patches.shape[0], num, *rest)
    return patches if head is None else torch.cat([head, patches], dim=1)


# Backbones whose position embeddings fix the frame size (TimeSformer interpolates its own).
_FIXED_SIZE_BACKBONES = ("videomae", "vivit")

class MambaVLVisionAdapter(nn.Module):
    """Video tokens of width D_v -> (batch, N, D) in the canonical order.

    With ``config.vision_config`` set, ``backbone`` is ``AutoModel.from_config(vision_config)``, called by its
    ``main_input_name`` on ``pixel_values`` (batch, T, C, H, W); its whole ``last_hidden_state`` is used. Without one,
    the adapter reads ``video_features`` (batch, F, vision_feature_dim). With ``vision_adapter="identity"`` there is
    no norm / proj: the tokens are returned as they are. For ``fusion_type="linear_probe"`` the backbone is frozen and
    stays in eval mode.
    """

    def _check_frame_shape(self, pixel_values: torch.Tensor) -> None:
        """Channels (any backbone) and frame size (backbones with fixed position embeddings) before the backbone,
        whose own errors name neither the argument nor the shapes."""
        cfg = self.backbone.config
        channels = getattr(cfg, "num_channels", None)
        size = getattr(cfg, "image_size", None)
        fixed = getattr(cfg, "model_type", None) in _FIXED_SIZE_BACKBONES and isinstance(size, int)
        _, frames, c, h, w = pixel_values.shape
        if (isinstance(channels, int) and c != channels) or (fixed and (h, w) != (size, size)):
            expected_hw = f"{size}, {size}" if fixed else "height, width"
            raise ValueError(
                f"pixel_values: expected shape (batch, {frames}, {channels}, {expected_hw}) for the "
                f"{cfg.model_type} backbone, got {tuple(pixel_values.shape)}"
            )

    def __init__(self, config) -> None:
        super().__init__()
        self.num_frames = config.num_frames
        self.feature_dim = config.vision_feature_dim
        self.has_cls, self.order, self.temporal_size = config.video_layout
        self.backbone = AutoModel.from_config(config.vision_config) if config.vision_config is not None else None
        self.frozen = config.fusion_type == "linear_probe"
        if config.vision_adapter == "identity":
            self.norm = self.proj = self.act = None
            # Holds no values; follows `model.to(dtype)` so that features are cast to the model's dtype.
            self.register_buffer("dtype_reference", torch.empty(0), persistent=False)
        else:
            self.norm = nn.LayerNorm(config.vision_feature_dim, eps=config.layer_norm_eps)
            self.proj = nn.Linear(config.vision_feature_dim, config.hidden_size)
            self.act = nn.Tanh()
        if self.frozen and self.backbone is not None:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> MambaVLVisionAdapter:
        super().train(mode)
        if self.frozen and self.backbone is not None:
            # Also after `from_backbones` (which swaps the backbone in) and `from_pretrained` (which recreates loaded
            # parameters with requires_grad=True, then calls `eval()`).
            self.backbone.eval()
            self.backbone.requires_grad_(False)
        return self

    def _dtype(self) -> torch.dtype:
        return self.norm.weight.dtype if self.norm is not None else self.dtype_reference.dtype

    def tokens(
        self,
        pixel_values: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The backbone's (or the features') tokens in canonical order: (batch, N, D_v) and the (batch, N) mask."""
        if pixel_values is not None:
            if self.backbone is None:
                raise ValueError(
                    "pixel_values: this model has no vision backbone (vision_config is None); pass video_features "
                    f"(batch, frames, {self.feature_dim}) instead"
                )
            if pixel_values.dim() != 5 or pixel_values.shape[1] != self.num_frames:
                raise ValueError(
                    f"pixel_values: expected shape (batch, {self.num_frames}, channels, height, width) for num_frames="
                    f"{self.num_frames}, got {tuple(pixel_values.shape)}"
                )
            if not pixel_values.is_floating_point():
                raise ValueError(f"pixel_values: expected a float tensor, got {pixel_values.dtype}")
            self._check_frame_shape(pixel_values)
            if video_attention_mask is not None:
                raise ValueError("video_attention_mask: only meaningful with video_features, not with pixel_values")
            with record_function("mambavl.backbone"):
                outputs = self.backbone(**{self.backbone.main_input_name: pixel_values.to(self._dtype())})
            tokens, mask = outputs.last_hidden_state, None
        else:
            if self.backbone is not None:
                raise ValueError(
                    "video_features: this model runs its vision backbone on pixel_values; pass pixel_values "
                    f"(batch, {self.num_frames}, channels, height, width)"
                )
            if video_features.dim() != 3 or video_features.shape[-1] != self.feature_dim:
                raise ValueError(
                    f"video_features: expected shape (batch, tokens, {self.feature_dim}), got "
                    f"{tuple(video_features.shape)}"
                )
            tokens, mask = video_features.to(self._dtype()), video_attention_mask
            if mask is not None and tuple(mask.shape) != tuple(tokens.shape[:2]):
                raise ValueError(
                    f"video_attention_mask: expected shape {tuple(tokens.shape[:2])} (batch, tokens), got "
                    f"{tuple(mask.shape)}"
                )
        tokens = to_canonical_order(tokens, self.has_cls, self.order, self.temporal_size)
        if mask is not None:
            mask = to_canonical_order(mask, self.has_cls, self.order, self.temporal_size)
        return tokens, mask

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_attention_mask: torch.Tensor | None = None,
        cls_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, N, D) adapted tokens and their (batch, N) mask (None: all real); ``cls_only`` keeps the CLS."""
        tokens, mask = self.tokens(pixel_values, video_features, video_attention_mask)
        with record_function("mambavl.video_adapter"):
            if cls_only:
                tokens, mask = tokens[:, :1], None
            if self.norm is None:
                return tokens, mask
            return self.act(self.proj(self.norm(tokens))), mask

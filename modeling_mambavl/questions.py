"""The question branch: a transformers text model (its input embeddings, or the whole model) and the text MLP."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel

from .fusion import masked_mean


class MambaVLQuestionEncoder(nn.Module):
    """Tokenized questions (n, L) -> (n, L, D) token states, or (n, D) pooled vectors.

    ``text_encoder="embeddings"`` runs only the text model's input embeddings (word + position (+ type) embeddings and
    LayerNorm, as the paper); ``"full"`` runs the whole text model, whose pooled output serves the baselines. The text
    model is kept whole (a 0-layer model is fine) so its buffers and loading behave as transformers expects. Frozen
    (the default), it stays in eval mode and runs without gradients; ``text_embedding_dropout`` is applied after it.
    Then the text MLP: Linear(Dt, D, bias=False) -> ReLU -> Linear(D, D) -> ReLU -> Linear(D, D).

    ``authors_text_encoder`` (with ``"full"``) runs the text model as the authors' baselines did: called with the ids
    alone (no attention mask, so padding is attended; RoBERTa then numbers positions from ``ids != pad``) and left in
    the model's train / eval mode even when frozen, so its dropout is active while training.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.text_encoder = config.text_encoder
        self.frozen = config.freeze_text_encoder
        self.authors_mode = config.authors_text_encoder
        self.text_model = AutoModel.from_config(config.text_config)
        if self.frozen:
            self.text_model.requires_grad_(False)
        self.dropout = nn.Dropout(config.text_embedding_dropout)
        text_dim, dim = config.text_config.hidden_size, config.hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)
        )

    def train(self, mode: bool = True) -> MambaVLQuestionEncoder:
        super().train(mode)
        if self.frozen:
            # Also re-freezes after `from_pretrained`, which recreates loaded parameters with requires_grad=True and
            # then calls `eval()`. The authors' baselines left their frozen RoBERTa in the model's mode.
            if not self.authors_mode:
                self.text_model.eval()
            self.text_model.requires_grad_(False)
        return self

    @property
    def max_length(self) -> int | None:
        """The longest question the text model's position table holds (``None`` if it has no such table)."""
        positions = getattr(self.text_model.config, "max_position_embeddings", None)
        if not isinstance(positions, int):
            return None
        embeddings = getattr(self.text_model, "embeddings", None)
        offset = embeddings.padding_idx + 1 if hasattr(embeddings, "create_position_ids_from_input_ids") else 0
        return positions - offset

    @property
    def vocab_size(self) -> int | None:
        """Rows of the text model's token embedding table."""
        embedding = self.text_model.get_input_embeddings()
        return embedding.num_embeddings if isinstance(embedding, nn.Embedding) else None

    def _position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions counted over real tokens only, so that left padding embeds the same as right padding.

        RoBERTa-style embeddings number real tokens from ``padding_idx + 1`` and give padding ``padding_idx``.
        """
        embeddings = getattr(self.text_model, "embeddings", None)
        offset = pad_position = 0
        if hasattr(embeddings, "create_position_ids_from_input_ids"):
            pad_position = embeddings.padding_idx
            offset = pad_position + 1
        mask = attention_mask.long()
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0) + offset
        return torch.where(mask.bool(), positions, torch.full_like(positions, pad_position))

    def _text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooled: bool) -> torch.Tensor:
        position_ids = self._position_ids(attention_mask)
        if self.text_encoder == "embeddings":
            embeddings = getattr(self.text_model, "embeddings", None)
            if embeddings is not None:
                states = embeddings(input_ids=input_ids, position_ids=position_ids)
            else:
                states = self.text_model.get_input_embeddings()(input_ids)
            return masked_mean(states, attention_mask) if pooled else states
        if self.authors_mode:
            outputs = self.text_model(input_ids=input_ids)
        else:
            outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if not pooled:
            return outputs.last_hidden_state
        pooler_output = getattr(outputs, "pooler_output", None)
        return pooler_output if pooler_output is not None else masked_mean(outputs.last_hidden_state, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids / attention_mask (n, L) -> (n, L, D) token states (or (n, D) with ``pooled``) and their mask.

        The whole text model reads its first position as the sequence summary (BERT / RoBERTa poolers), so for
        ``"full"`` the real tokens are first moved to the front (the returned mask says where they are); the
        embeddings alone handle any padding through position ids counted over real tokens.
        """
        if self.text_encoder == "full":
            order = torch.argsort((attention_mask == 0).to(torch.int8), dim=-1, stable=True)
            input_ids, attention_mask = input_ids.gather(-1, order), attention_mask.gather(-1, order)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self._text_states(input_ids, attention_mask, pooled)
        return self.mlp(self.dropout(states)), attention_mask

"""EPIC-KITCHENS-100: class vocabulary, annotations, metrics, submissions and synthetic data."""

from .vocabulary import EK100_ATTRIBUTION, EK100Class, EK100Vocabulary

__all__ = ["EK100Vocabulary", "EK100Class", "EK100_ATTRIBUTION"]

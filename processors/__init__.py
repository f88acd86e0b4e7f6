"""Processors of MambaVL: clip decoding and frame sampling, the video processor, questions and masking, the default
question tokenizer and ``MambaVLProcessor``."""

from .masking import mask_answer
from .processing import MambaVLProcessor, register_auto_classes
from .questions import (
    GENERIC_TEMPLATES,
    NARRATION_TEMPLATES,
    ORACLE_LABEL,
    PREDICTED_TEMPLATES,
    QuestionSource,
    default_questions,
    make_question_source,
    read_question_file,
    write_question_file,
)
from .sampling import clip_generator, sample_frame_indices, window_to_frame_range
from .tokenizer import build_question_tokenizer, default_question_tokenizer
from .video_io import MediaError, load_clip, probe_video
from .video_processing import MambaVLVideoProcessor

__all__ = [
    "MambaVLProcessor",
    "MambaVLVideoProcessor",
    "register_auto_classes",
    "MediaError",
    "load_clip",
    "probe_video",
    "clip_generator",
    "sample_frame_indices",
    "window_to_frame_range",
    "mask_answer",
    "make_question_source",
    "QuestionSource",
    "ORACLE_LABEL",
    "GENERIC_TEMPLATES",
    "NARRATION_TEMPLATES",
    "PREDICTED_TEMPLATES",
    "default_questions",
    "read_question_file",
    "write_question_file",
    "build_question_tokenizer",
    "default_question_tokenizer",
]

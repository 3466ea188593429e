"""Stage ⑥ — analyse one's own media: segment, predict, report (``emofuse analyze``)."""

from emofuse.analyze.analyzer import Analyzer, default_model_dir
from emofuse.analyze.result import Analysis, Skipped
from emofuse.analyze.transcripts import Turn, read_transcript

__all__ = ["Analysis", "Analyzer", "Skipped", "Turn", "default_model_dir", "read_transcript"]

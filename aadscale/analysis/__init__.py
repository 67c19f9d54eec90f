"""The paper's section-3 data analysis (Tables 1-5), figures, and defenses compared with their bases (`compare`)."""
from aadscale.analysis.lime import LimeOptions, lime_weights, segment, top_features_mask
from aadscale.analysis.run import analyze
from aadscale.analysis.study import StudyOptions, study_batch
from aadscale.analysis.tables import summarize, to_markdown

__all__ = ["analyze", "StudyOptions", "study_batch", "LimeOptions", "lime_weights", "segment",
           "top_features_mask", "summarize", "to_markdown"]

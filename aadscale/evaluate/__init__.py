"""Robust evaluation: Table 6 columns, the evaluation suite (Table 7, strong attacks, masking check,
worst case), model loading."""
from aadscale.evaluate.loading import LoadedModel, load_model
from aadscale.evaluate.robust import TABLE6, column_generator, format_rows, format_table, robust_accuracy
from aadscale.evaluate.suite import PAPER, STRONG, TABLE7, WORST, evaluate_suite, masking_check, select_subset

__all__ = ["robust_accuracy", "TABLE6", "format_table", "format_rows", "column_generator", "load_model",
           "LoadedModel", "evaluate_suite", "masking_check", "select_subset", "PAPER", "STRONG", "TABLE7",
           "WORST"]

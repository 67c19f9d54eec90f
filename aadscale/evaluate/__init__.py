"""Robust evaluation: Table 6 columns, the evaluation suite (Table 7, APGD, masking check), model loading."""
from aadscale.evaluate.apgd import apgd
from aadscale.evaluate.checkpoint import load_model, parse_eps
from aadscale.evaluate.robust import (TABLE6, AttackSpec, format_rows, format_table, parse_attack_name,
                                      robust_accuracy, run_spec)
from aadscale.evaluate.suite import (PAPER, STRONG, TABLE7, evaluate_suite, masking_check,
                                     select_subset)

__all__ = ["robust_accuracy", "parse_attack_name", "AttackSpec", "TABLE6", "format_table", "format_rows",
           "run_spec",
           "apgd", "load_model", "parse_eps", "evaluate_suite", "masking_check", "select_subset",
           "PAPER", "STRONG", "TABLE7"]

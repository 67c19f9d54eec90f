"""Robust evaluation."""
from aadscale.evaluate.robust import (TABLE6, AttackSpec, format_table, parse_attack_name,
                                      robust_accuracy, run_spec)

__all__ = ["robust_accuracy", "parse_attack_name", "AttackSpec", "TABLE6", "format_table", "run_spec"]

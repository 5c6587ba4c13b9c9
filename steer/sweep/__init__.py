"""The style study: corpora x methods x knobs -> judged texts, results and comparisons. No argv here.

Three parts: :mod:`steer.sweep.config` (the settings and the grid of cells, each a
:class:`steer.spec.SteeringSpec`), :mod:`steer.sweep.run` (generating and judging the cells,
resumable) and :mod:`steer.sweep.report` (the cell schema, results.csv and comparisons.csv).
"""

from steer.sweep.config import SweepConfig, builtin_prompts, parse_lambdas, read_prompts
from steer.sweep.report import COLUMNS, judge_columns, read_cells, read_comparisons, report_sweep
from steer.sweep.run import run_sweep

__all__ = ["COLUMNS", "SweepConfig", "builtin_prompts", "judge_columns", "parse_lambdas", "read_cells",
           "read_comparisons", "read_prompts", "report_sweep", "run_sweep"]

"""vlens.analysis: dataset-level findings (failures, biases, slices) over a run's tables.

Entry point: `analyze(AnalysisInput.from_run(path), AnalysisConfig()) -> Findings`.
"""

from vlens.analysis.analyze import analyze
from vlens.analysis.config import AnalysisConfig, Hooks
from vlens.analysis.findings import Finding, Findings, read_findings, write_findings
from vlens.analysis.inputs import AnalysisInput, holdout_split

__all__ = ["AnalysisConfig", "AnalysisInput", "Finding", "Findings", "Hooks", "analyze",
           "holdout_split", "read_findings", "write_findings"]

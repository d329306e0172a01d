"""vlens.pipeline: the stages in order (predict -> saliency -> VLM -> analysis -> report).

Python API::

    import vlens
    result = vlens.run("demo", "manifest:data/manifest.jsonl", out="runs/x")
    result.samples      # one row per sample: prediction, judge answer, saliency metrics
    result.findings     # ranked findings (list of dicts) with evidence
    result.slices       # failure slices
"""

from vlens.pipeline.full import RunResult, analyze_run, demo, run
from vlens.pipeline.run import ExplainOptions, ExplainResult, explain

__all__ = ["ExplainOptions", "ExplainResult", "RunResult", "analyze_run",
           "demo", "explain", "run"]

"""The log-prob engine (one module every method uses) and generation."""

from alignkit.engine.batch import ResponseBatch, collate
from alignkit.engine.logprobs import LogProbs, SequenceScorer, sequence_logps

__all__ = ["LogProbs", "ResponseBatch", "SequenceScorer", "collate", "sequence_logps"]

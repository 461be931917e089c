"""Logs and metrics, configured once and injected (never imported as globals)."""

from .logging import configure_logging, redact_secrets
from .lossy import LossyStream
from .metrics import Metrics

__all__ = ["LossyStream", "Metrics", "configure_logging", "redact_secrets"]

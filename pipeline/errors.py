"""Exceptions raised by the pipeline.

Every failure an operator can act on has its own subclass of `PipelineError`.
Messages say what was expected, what was found, where (file, line or JSON
path) and, where there is one, the next step. Only the task layer turns these
into a one-line message and an exit code.
"""

from __future__ import annotations

from collections.abc import Sequence


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """The `[tool.pipeline]` table or a command-line option is invalid."""


class CollectError(PipelineError):
    """The git history needed for the change set is missing or unreadable."""


class ValidationError(PipelineError):
    """Content failed validation; `findings` lists every problem found."""

    def __init__(self, message: str, findings: Sequence[object] | None = None) -> None:
        super().__init__(message)
        self.findings = list(findings or [])


class CatalogError(PipelineError):
    """A catalog source file or catalog folder cannot be read."""


class MigrationError(PipelineError):
    """A migration is malformed or failed against a database."""


class BundleError(PipelineError):
    """A bundle cannot be built or read."""


class SignatureError(PipelineError):
    """A key or signature is malformed, of the wrong type, or does not verify."""


class VerificationError(PipelineError):
    """A bundle failed one of the verification checks."""


class StaleRotationError(VerificationError):
    """A bundle's next trusted keys are not newer than those already installed."""


class ApplyError(PipelineError):
    """Applying a bundle failed or was rejected; the message states the database's state."""


class DatabaseToolError(PipelineError):
    """A database tool (backup, restore, check, repair, reindex, transfer) failed."""

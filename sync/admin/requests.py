"""What the administration accepts from a person (CLI or HTTP) and the error it raises for anything else."""
from __future__ import annotations


class InvalidRequest(ValueError):
    """Bad input: the message names the value and the expected form."""

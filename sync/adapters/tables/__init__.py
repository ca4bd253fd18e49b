"""The state ports on Azure Table Storage: one module per concern (see store.py)."""
from .keys import TRANSACTION_LIMIT, key, unkey
from .store import TableState

__all__ = ["TRANSACTION_LIMIT", "TableState", "key", "unkey"]

"""Small shared utilities (atomic writes, logging helpers)."""

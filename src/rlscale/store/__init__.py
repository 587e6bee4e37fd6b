"""The run store (see run_store.py for the layout and why SQLite with WAL)."""

from rlscale.store.run_store import CKPT_DIR, CONFIG_FILE, DB_FILE, SUMMARY_FILE, RunStore, config_hash

__all__ = ["RunStore", "config_hash", "CONFIG_FILE", "DB_FILE", "SUMMARY_FILE", "CKPT_DIR"]

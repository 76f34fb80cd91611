"""Lightning callbacks used by srlab runs."""

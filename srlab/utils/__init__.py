"""Small shared utilities: atomic file writes (`files`), atomic checkpoint IO (`checkpoint_io`), speed options (`perf`).

Nothing is imported here, so `srlab.utils.files` stays free of torch and Lightning.
"""

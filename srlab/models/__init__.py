"""Super-resolution networks: HDSRNet (and its Table I variants) and the baselines."""

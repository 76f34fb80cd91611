"""Evaluate srlab models: `python eval.py [model=...] [ckpt_path=...] [report=paper] [task=upscale ...]`.

See configs/eval.yaml for every key; the work is done by srlab.tasks.evaluate.
"""

from srlab.cli import eval_main

if __name__ == "__main__":
    eval_main()

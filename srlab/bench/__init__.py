"""How fast srlab trains, infers and loads data, against HDSRNet run the way its authors ran it.

Run it as ``python -m srlab.bench`` (see ``srlab.bench.__main__`` for the parts and options).
"""

from srlab.bench.authors_hdsrnet import AuthorsHDSRNet, baseline_like
from srlab.bench.loader import bench_loader, patches_per_second
from srlab.bench.memory import bench_peak
from srlab.bench.settings import PARTS, BenchSettings
from srlab.bench.timing import (
    bench_infer,
    bench_train,
    build_pair,
    conv_backward_flops,
    inference_flops,
    make_optimizer,
    matmul_peak_gflops,
    relative_error,
    training_flops,
    training_step,
)

__all__ = [
    "PARTS",
    "AuthorsHDSRNet",
    "BenchSettings",
    "baseline_like",
    "bench_infer",
    "bench_loader",
    "bench_peak",
    "bench_train",
    "build_pair",
    "conv_backward_flops",
    "inference_flops",
    "make_optimizer",
    "matmul_peak_gflops",
    "patches_per_second",
    "relative_error",
    "training_flops",
    "training_step",
]

"""The four SR benchmark sets (Set5, Set14, B100, Urban100) as LR/HR pairs, from disk.

Two layouts are read:

- EDSR's ``benchmark`` folder (what ``python -m srlab.data.download benchmarks`` makes)::

      <root>/<name>/HR/<stem>.png
      <root>/<name>/LR_bicubic/X{s}/<stem>x{s}.png

- HR images alone (``<root>/<name>/HR/*`` or ``<root>/<name>/*``): the LR image is
  MATLAB-exact ``bicubic_downscale`` of the mod-cropped HR, computed once and
  kept in the decoded-image cache (``srlab.data.cache``).

HR is mod-cropped to the scale (DESIGN.md §3). A file stored with one grey
channel stays 2-D, because the metric scores it on that channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from srlab.data.cache import CACHE_DIRNAME, cached_array
from srlab.data.datasets import ImagePair
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import list_images, read_image

__all__ = ["BENCHMARK_SETS", "benchmark_eval_sets", "canonical_benchmark", "load_benchmark"]

BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100")


def canonical_benchmark(name: str) -> str:
    """Set5/Set14/B100/Urban100 from the name or an alias (U100, BSD100, urban100...)."""
    # Imported here: srlab.eval depends on srlab.data, not the other way round at import time.
    from srlab.eval.paper import canonical_dataset

    try:
        return canonical_dataset(name)
    except ValueError:
        raise ValueError(
            f"unknown benchmark set {name!r}; valid: {', '.join(BENCHMARK_SETS)} "
            "(aliases: U100 for Urban100, BSD100/BSDS100 for B100)"
        ) from None


def _download_hint(root: Path, name: str) -> str:
    return f"python -m srlab.data.download benchmarks --root {root.parent} --names {name}"


def _hr_folder(set_dir: Path) -> Path:
    return set_dir / "HR" if (set_dir / "HR").is_dir() else set_dir


def _lr_file(lr_dir: Path, hr_path: Path, scale: int) -> Path:
    for suffix in dict.fromkeys((".png", hr_path.suffix)):
        candidate = lr_dir / f"{hr_path.stem}x{scale}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{lr_dir / f'{hr_path.stem}x{scale}.png'}: LR image of {hr_path} is missing "
        f"(every HR image needs its LR in {lr_dir}, or remove that folder to generate all LR images)"
    )


def _pair_from_files(hr_path: Path, lr_path: Path, scale: int) -> ImagePair:
    hr = modcrop(read_image(hr_path), scale)
    lr = read_image(lr_path)
    if lr.ndim != hr.ndim:
        kinds = {2: "grey", 3: "RGB"}
        raise ValueError(f"{lr_path}: LR is {kinds[lr.ndim]} but its HR {hr_path} is {kinds[hr.ndim]}")
    if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
        raise ValueError(
            f"{lr_path}: LR {lr.shape[1]}x{lr.shape[0]} does not match HR {hr_path} "
            f"({hr.shape[1]}x{hr.shape[0]} after mod-crop) at x{scale}; "
            f"expected LR {hr.shape[1] // scale}x{hr.shape[0] // scale}"
        )
    return ImagePair(hr_path.stem, lr, hr)


def _pair_generated(hr_path: Path, scale: int, cache_dir: Path) -> ImagePair:
    hr = modcrop(read_image(hr_path), scale)
    lr = cached_array(hr_path, cache_dir, f"lr_bicubic_x{scale}", lambda: bicubic_downscale(hr, scale))
    return ImagePair(hr_path.stem, lr, hr)


def load_benchmark(root: Path, name: str, scale: int, cache_dir: Path | None = None) -> list[ImagePair]:
    """LR/HR pairs of one benchmark set, sorted by file name.

    `cache_dir` holds generated LR images of HR-only folders (default
    ``<root>/.srlab_cache/<name>``); files read from an LR folder are not cached.
    """
    root = Path(root)
    name = canonical_benchmark(name)
    set_dir = root / name
    if not set_dir.is_dir():
        raise FileNotFoundError(
            f"{set_dir}: benchmark set {name} not found; download it with `{_download_hint(root, name)}` "
            f"or point benchmark_root to a folder holding {name}/HR"
        )
    hr_paths = list_images(_hr_folder(set_dir))
    lr_dir = set_dir / "LR_bicubic" / f"X{scale}"
    if lr_dir.is_dir():
        return [_pair_from_files(p, _lr_file(lr_dir, p, scale), scale) for p in hr_paths]
    cache_dir = Path(cache_dir) if cache_dir is not None else root / CACHE_DIRNAME / name
    return [_pair_generated(p, scale, cache_dir) for p in hr_paths]


def benchmark_eval_sets(
    root: Path, names: Sequence[str], scale: int, cache_dir: Path | None = None
) -> dict[str, list[ImagePair]]:
    """{canonical name: pairs} for several sets, in the given order (one eval loader each)."""
    if isinstance(names, str):
        names = [names]
    sets: dict[str, list[ImagePair]] = {}
    for name in names:
        canonical = canonical_benchmark(name)
        if canonical in sets:
            raise ValueError(f"benchmark set {canonical} is listed twice in {list(names)}")
        sets[canonical] = load_benchmark(
            root, canonical, scale, None if cache_dir is None else Path(cache_dir) / canonical
        )
    return sets

"""The SR benchmark sets (Set5, Set14, B100, Urban100) as LR/HR pairs, from disk; the one list of their names.

`KNOWN_SETS` is the only place that names the sets and their other spellings:
data modules, the downloader and the paper tables import it, so adding a set
(e.g. ``BenchmarkSet("Manga109", downloadable=False)``) is one line.

Two layouts are read:

- EDSR's ``benchmark`` folder (what ``python -m srlab.data.download benchmarks`` makes)::

      <root>/<name>/HR/<stem>.png
      <root>/<name>/LR_bicubic/X{s}/<stem>x{s}.png

- HR images alone (``<root>/<name>/HR/*`` or ``<root>/<name>/*``): the LR image is
  MATLAB-exact ``bicubic_downscale`` of the mod-cropped HR, computed once and
  kept in the decoded-image cache (``srlab.data.cache``).

HR is mod-cropped to the scale (docs/protocol.md). A file stored with one grey
channel stays 2-D, because the metric scores it on that channel.

Any other folder in either layout (your own test set) is read by `load_image_folder`:
``python eval.py datasets=[Set5,/path/to/my_set]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from srlab.data.cache import CACHE_DIRNAME, cached_array
from srlab.data.datasets import ImagePair
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import list_images, read_image

__all__ = [
    "BENCHMARK_SETS",
    "DOWNLOADABLE_SETS",
    "KNOWN_SETS",
    "BenchmarkSet",
    "benchmark_eval_sets",
    "canonical_benchmark",
    "load_benchmark",
    "load_image_folder",
]


@dataclass(frozen=True)
class BenchmarkSet:
    """One benchmark set: its canonical name, other spellings, and whether EDSR's benchmark.tar holds it."""

    name: str
    aliases: tuple[str, ...] = ()
    downloadable: bool = True  # in benchmark.tar, what `python -m srlab.data.download benchmarks` fetches


# One line per set. The paper writes "U100" and "BSD100 (B100)"; other SR code says "BSDS100".
KNOWN_SETS: tuple[BenchmarkSet, ...] = (
    BenchmarkSet("Set5"),
    BenchmarkSet("Set14"),
    BenchmarkSet("B100", aliases=("BSD100", "BSDS100")),
    BenchmarkSet("Urban100", aliases=("U100",)),
)
BENCHMARK_SETS: tuple[str, ...] = tuple(s.name for s in KNOWN_SETS)
DOWNLOADABLE_SETS: tuple[str, ...] = tuple(s.name for s in KNOWN_SETS if s.downloadable)


def _name_key(name: str) -> str:
    # Case, spaces, hyphens and underscores carry no meaning in a set name ("urban-100", "set_5").
    return "".join(ch for ch in str(name).casefold() if ch not in " -_")


_CANONICAL: dict[str, str] = {_name_key(n): s.name for s in KNOWN_SETS for n in (s.name, *s.aliases)}


def _aliases_text() -> str:
    return ", ".join(f"{'/'.join(s.aliases)} for {s.name}" for s in KNOWN_SETS if s.aliases)


def canonical_benchmark(name: str) -> str:
    """The canonical name (Set5, Set14, B100, Urban100...) of a set or its alias (U100, BSD100, urban100...).

    Raises ValueError naming the valid sets and aliases for anything else.
    """
    canonical = _CANONICAL.get(_name_key(name))
    if canonical is None:
        raise ValueError(
            f"unknown benchmark set {name!r}; valid: {', '.join(BENCHMARK_SETS)} (aliases: {_aliases_text()})"
        )
    return canonical


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
    return _load_set_dir(set_dir, scale, Path(cache_dir) if cache_dir is not None else root / CACHE_DIRNAME / name)


def load_image_folder(folder: Path, scale: int, cache_dir: Path | None = None) -> list[ImagePair]:
    """LR/HR pairs of any folder in one of the two layouts above (your own test set), sorted by file name.

    HR images sit in ``<folder>/HR`` or in ``<folder>`` itself; LR images come from
    ``<folder>/LR_bicubic/X{s}`` when it exists, else from MATLAB-exact bicubic, cached in
    `cache_dir` (default ``<folder>/.srlab_cache``, the cache `data=folder` validation uses for it).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    return _load_set_dir(folder, scale, Path(cache_dir) if cache_dir is not None else folder / CACHE_DIRNAME)


def _load_set_dir(set_dir: Path, scale: int, cache_dir: Path) -> list[ImagePair]:
    hr_paths = list_images(_hr_folder(set_dir))
    lr_dir = set_dir / "LR_bicubic" / f"X{scale}"
    if lr_dir.is_dir():
        return [_pair_from_files(p, _lr_file(lr_dir, p, scale), scale) for p in hr_paths]
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

"""`python -m kdprune.data NAME [ROOT]`: prepare a data set (install or download it)."""

import sys

from omegaconf import OmegaConf

from kdprune.errors import KdpruneError
from kdprune.instantiation import instantiate
from kdprune.paths import group_options, option_file


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "fashion_mnist"
    path = option_file("dataset", name)
    if path is None:
        choices = ", ".join(group_options("dataset"))
        print(f"kdprune: error: unknown dataset {name!r}; choose from: {choices}", file=sys.stderr)
        return 2
    # The split seed only picks which training images validate; preparing the files ignores it.
    data_dir = argv[1] if len(argv) > 1 else "data"
    cfg = OmegaConf.create({"paths": {"data_dir": data_dir}, "seed": 0, "split_seed": 0})
    cfg.dataset = OmegaConf.load(path)
    try:
        splits = instantiate(cfg.dataset.splits)
    except KdpruneError as err:
        print(f"kdprune: error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{s} {len(getattr(splits, s))}" for s in ("train", "val", "test"))
    print(f"{name}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Neural architecture search in torch: DARTS and ASAP over the DARTS cell space.

    from rung.nas import Search, evaluate, load_data, random_genotype

- `Search(method, settings, seed)`: one resumable search (rung.nas.search documents the
  settings); `run_epoch()`, `genotype()`, `history()`, `state_dict()` / `load_state_dict()`.
- `evaluate(genotype, data, epochs=...)`: the derived network trained from scratch.
- `random_genotype(ops, nodes, seed)`: the baseline from the same space.
- `load_data("digits" | "path.npz", seed)`: the splits a search and an evaluation use.

Needs the optional extra torch (pip install 'rung[torch]'); nothing else in rung imports
this package, so rung works without it.
"""

from rung.errors import InputError

try:
    import torch  # noqa: F401
except ImportError as missing:
    raise InputError("rung.nas", "needs torch, which is not installed", "pip install 'rung[torch]'") from missing

from rung.nas.data import Data, load_data  # noqa: E402
from rung.nas.evaluate import DerivedNetwork, evaluate  # noqa: E402
from rung.nas.genotype import check_genotype, derive, random_genotype  # noqa: E402
from rung.nas.ops import CANDIDATE_OPS  # noqa: E402
from rung.nas.search import METHODS, Search, resolve_settings  # noqa: E402

__all__ = ["CANDIDATE_OPS", "METHODS", "Data", "DerivedNetwork", "Search", "check_genotype",
           "derive", "evaluate", "load_data", "random_genotype", "resolve_settings"]

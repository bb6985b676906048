"""`python -m precompute <step> ...` — each step lives in its own module with a `main(argv) -> int`."""
from __future__ import annotations

import importlib
import sys

from precompute.bundle import BundleError
from precompute.config import ConfigError
from precompute.observation import InputError

STEPS = {
    "mock": ("precompute.mock.cli", "write a mock IFU survey (MaNGA or eCALIFA files) or SED library with its truth"),
    "inspect": ("precompute.formats", "print one JSON line per input file: format, shape, coverage, bad fraction"),
    "prepare": ("precompute.prepare", "de-redshift, resample, mask, normalise and Voronoi-bin inputs into a core bundle"),
    "build": ("precompute.build", "mock/read -> prepare -> models -> projections: write the full bundle"),
    "assign": ("precompute.assign", "place new spectra or cubes on a bundle's frozen maps, write a CSV"),
    "compare": ("precompute.compare", "compare two galaxy populations in an embedding (10-NN distances + KS test)"),
    "validate": ("precompute.validate", "check bundles against the schema: one line per problem, exit 1 if any"),
    "rank": ("precompute.rank", "what to look at next: anomaly score x relevance learned from labels, write a CSV"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STEPS:
        print("usage: python -m precompute <step> [options]\n\nsteps:")
        for name, (_, text) in STEPS.items():
            print(f"  {name:<8} {text}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    module = importlib.import_module(STEPS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except (ConfigError, BundleError, InputError) as err:
        # The library raises; only here do problems become messages and exit codes (2: the config or the
        # command line is wrong, 1: an input or a bundle is). One line per problem, no traceback.
        for line in str(err).splitlines():
            print(f"precompute {argv[0]}: {line}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())

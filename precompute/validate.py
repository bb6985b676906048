"""`python -m precompute validate BUNDLE [BUNDLE ...]`: check bundles against the schema (precompute/schema.py).

Prints one line per problem, naming the file and what is wrong, and exits 1 when any bundle has a problem.
"""
from __future__ import annotations

import argparse

from precompute.schema import validate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute validate", description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", help="bundle folders")
    args = parser.parse_args(argv)
    failed = False
    for path in args.bundles:
        problems = validate(path)
        for problem in problems:
            print(f"{path}: {problem}")
        print(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
        failed |= bool(problems)
    return 1 if failed else 0

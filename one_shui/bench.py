"""`one-shui-bench`: not implemented yet (see the open issues)."""

import sys


def main() -> None:
    sys.exit("one-shui-bench: not implemented yet; `one-shui-split` makes and prints a split")

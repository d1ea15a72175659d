"""``python -m irisflow``."""

from ._cli import main

main()

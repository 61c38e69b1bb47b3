"""``python -m hybridflow``."""

from hybridflow.cli import main

main()

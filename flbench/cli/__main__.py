"""`python -m flbench.cli` = `flbench`."""
from flbench.cli.app import main

main()

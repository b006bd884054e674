"""`python -m tokbin verify [data/]` and `python -m tokbin inspect data/train.bin`."""
import sys

from tokbin.cli import main

sys.exit(main())

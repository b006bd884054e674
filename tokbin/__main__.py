"""`python -m tokbin verify [data/]` and `python -m tokbin inspect data/train.bin`."""
import signal
import sys

from tokbin.cli import main

if hasattr(signal, "SIGPIPE"):  # `inspect ... | head` ends quietly, as other CLI tools do
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
sys.exit(main())

"""`python -m tokbin verify | repair | inspect | set`: the command line (tokbin.cli)."""
import signal
import sys

from tokbin.cli import main

if hasattr(signal, "SIGPIPE"):  # `inspect ... | head` ends quietly, as other CLI tools do
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
sys.exit(main())

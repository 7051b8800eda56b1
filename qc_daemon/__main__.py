import sys

from qc_daemon.cli import main

sys.exit(main())

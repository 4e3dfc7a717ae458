"""Status script for cluster-generic: running / success / failed of a job started by submit.py."""

import os
import sys
from pathlib import Path

rc = Path(os.environ["SUBMIT_LOG"]).parent / f"{sys.argv[1]}.rc"
if not rc.exists():
    print("running")
else:
    print("success" if rc.read_text().strip() == "0" else "failed")

"""Submit script for Snakemake's cluster-generic executor that runs each job locally.

Records the job's rule and resources (read from the jobscript's ``# properties = {...}`` line,
the same job description a cluster scheduler gets) as one JSON line in ``$SUBMIT_LOG``, starts
the jobscript in the background and prints a job id; ``status.py`` reports on that id.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path


def main() -> int:
    jobscript = Path(sys.argv[-1])
    props = next(
        json.loads(line.split("=", 1)[1])
        for line in jobscript.read_text().splitlines()
        if line.startswith("# properties")
    )
    log = Path(os.environ["SUBMIT_LOG"])
    job_id = uuid.uuid4().hex[:12]
    with log.open("a") as f:
        f.write(json.dumps({"id": job_id, "rule": props["rule"], "resources": props["resources"]}))
        f.write("\n")
    rc = log.parent / f"{job_id}.rc"
    subprocess.Popen(
        ["bash", "-c", 'bash "$1"; echo $? > "$2.tmp" && mv "$2.tmp" "$2"', "job", jobscript, rc],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(log.parent / f"{job_id}.err", "w"),  # noqa: SIM115 (handed to the child)
    )
    print(job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())

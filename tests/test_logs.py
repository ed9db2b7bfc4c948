"""Logging set-up and the workflow job's quick exit (mmsurv.logs)."""

import subprocess
import sys


def test_exit_job_keeps_logs_and_output_and_returns_the_code(tmp_path):
    log = tmp_path / "logs" / "job.log"
    script = (
        "import logging, sys\n"
        "from mmsurv.logs import exit_job, setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "logging.getLogger('mmsurv.test').info('outputs written')\n"
        "sys.stdout.write('no newline at the end')\n"
        "exit_job(3)\n"
        "print('never reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 3
    assert done.stdout == "no newline at the end"
    assert "outputs written" in log.read_text() and "outputs written" in done.stderr

"""A real single-node SLURM cluster for integration tests (Debian's slurm-wlm 22.05 and munge).

Not a test module. ``SlurmCluster`` installs the packages when missing (root only), starts
munged, slurmctld and slurmd for one node on localhost with no systemd and no accounting
database, declares fake GPUs (``gres.conf`` with ``AutoDetect=off`` and character devices made
with ``mknod c 1 3``, since a Gres without device files drains the node), and stops every daemon
by the PID it recorded, also when the test fails.

The configuration is written to SLURM's default place, ``/etc/slurm/``, because the job-step
executor of snakemake-executor-plugin-slurm removes every ``SLURM_*`` variable (``SLURM_CONF``
included) before its inner ``srun``; an existing configuration that is not ours is never
overwritten (the cluster is then reported unavailable), and ours is removed at the end.

Traps measured here and handled: ``/run/munge`` must exist and belong to munge; without an
accounting database Snakemake must query ``squeue`` and ``MinJobAge`` must be >= 120 or it waits
forever; every rule needs a ``runtime``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
CONF_DIR = Path("/etc/slurm")
MARKER = "# mmsurv test cluster (tests/slurm_cluster.py); removed when the test ends"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (the test is skipped with this reason)."""


def ensure_installed() -> None:
    """Install slurm-wlm and munge from Debian when missing (needs root and the Debian mirror)."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and this is not a root Debian machine")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if result.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(command)} failed: {result.stderr[-500:]}")


class SlurmCluster:
    """One node (this machine, ``cpus`` CPUs, ``gpus`` fake GPUs) with partition ``debug``."""

    def __init__(self, root: Path, cpus: int = 2, gpus: int = 2, memory_mb: int = 8000) -> None:
        self.root = root
        self.cpus, self.gpus, self.memory_mb = cpus, gpus, memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.conf = CONF_DIR / "slurm.conf"
        self.pids: dict[str, int] = {}
        self._wrote_config = False

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, snakemake) talking to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self) -> SlurmCluster:
        ensure_installed()
        for folder in ("state", "spool", "log", "dev"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        self._write_config()
        self._daemon("slurmctld", ["slurmctld", "-f", str(self.conf)], self.root / "slurmctld.pid")
        self._daemon("slurmd", ["slurmd", "-f", str(self.conf)], self.root / "slurmd.pid")
        self._wait_idle()
        return self

    def stop(self) -> None:
        for pid in reversed(list(self.pids.values())):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        if self._wrote_config:
            for name in ("slurm.conf", "gres.conf"):
                (CONF_DIR / name).unlink(missing_ok=True)
            self._wrote_config = False

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        """The daemons' log tails, for assertion messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    # -------------------------------------------------------------------------------- internals
    def _start_munge(self) -> None:
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
        pidfile = run / "munged.pid"
        if _alive(pidfile):
            return  # a munged of this machine is already serving; leave it alone
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True, capture_output=True)
        self.pids["munged"] = _read_pid(pidfile)

    def _write_config(self) -> None:
        if self.conf.exists() and MARKER not in self.conf.read_text():
            raise SlurmUnavailable(f"{self.conf} holds a real SLURM configuration: not overwriting it")
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        devices = []
        for index in range(self.gpus):
            device = self.root / "dev" / f"fakegpu{index}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # like /dev/null
            devices.append(str(device))
        gres = f"Gres=gpu:{self.gpus} " if self.gpus else ""
        lines = {
            "ClusterName": "mmsurvtest",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "slurmctld.pid",
            "SlurmdPidFile": self.root / "slurmd.pid",
            "SlurmctldLogFile": self.root / "log/slurmctld.log",
            "SlurmdLogFile": self.root / "log/slurmd.log",
            "SlurmctldPort": 16817,
            "SlurmdPort": 16818,
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "GresTypes": "gpu",
            "MpiDefault": "none",
            "ReturnToService": 2,
            "MinJobAge": 300,
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
        }
        text = MARKER + "\n" + "\n".join(f"{key}={value}" for key, value in lines.items())
        text += (
            f"\nNodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            f"{gres}State=UNKNOWN\nPartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        )
        self._wrote_config = True
        self.conf.write_text(text)
        gres_lines = [MARKER, "AutoDetect=off"] + [f"NodeName={self.node} Name=gpu File={device}" for device in devices]
        (CONF_DIR / "gres.conf").write_text("\n".join(gres_lines) + "\n")

    def _daemon(self, name: str, command: list[str], pidfile: Path) -> None:
        result = subprocess.run(command, capture_output=True, text=True, env=self.env)
        if result.returncode != 0:
            raise SlurmUnavailable(f"{name} did not start: {result.stderr}\n{self.logs()}")
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                self.pids[name] = _read_pid(pidfile)
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"{name} wrote no PID file\n{self.logs()}")

    def _wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
            state = result.stdout.strip()
            if state in ("idle", "mixed"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"node never became idle (state {state!r})\n{self.logs()}")


def _read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def _alive(pidfile: Path) -> bool:
    if not pidfile.exists():
        return False
    try:
        os.kill(_read_pid(pidfile), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True

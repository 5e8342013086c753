"""The state file of an interactive lab (``zlab up``): ``.zlab/<name>/state.json``.

``zlab up`` starts the nodes detached and returns; every later command (in any
shell) finds them again through this file: which backend runs the lab, the
node processes or containers, their ports, where the keys are, and the fault
state the lab is in. ``.zlab/`` is per checkout (or ``$ZLAB_HOME``) and gitignored.

A lab's directory is *claimed* before anything of the lab is started: it
appears at once, with a ``claim.json`` that says who made it (pid, command,
backend, the run id docker labels carry). The claim is what makes a name one
lab's (a second ``zlab up`` of the name finds it taken), and what lets
``zlab down`` find the remains of a command killed before it could save a
state file: the agents' spec files and keys live below the claimed directory,
so its agents are found by their command lines (lab/backends/local.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from typing import Any

from lab.errors import ConfigError
from nodes.units import shown

STATE_FILE = "state.json"
MAX_NAME = 100      # bytes of a lab name, as of a scenario name: a file name holds 255
CLAIM_FILE = "claim.json"


def zlab_home() -> str:
    """Where labs keep their state: ``$ZLAB_HOME``, else ``.zlab`` in the current directory."""
    return os.path.abspath(os.environ.get("ZLAB_HOME") or ".zlab")


def lab_dir(name: str) -> str:
    if (not name or "/" in name or "\0" in name or name.startswith(".")
            or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME):
        raise ConfigError(f"bad lab name {shown(name)}: a lab name has 1 to {MAX_NAME} bytes, "
                          "no '/' and no leading '.'")
    return os.path.join(zlab_home(), name)


def save(name: str, state: dict[str, Any]) -> str:
    """Write atomically (a reader in another shell never sees half a file)."""
    d = lab_dir(name)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path


def load(name: str) -> dict[str, Any]:
    path = os.path.join(lab_dir(name), STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        known = ", ".join(names()) or "none is up"
        raise ConfigError(f"no lab named {name!r} (labs: {known})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: corrupt lab state: {e.msg}") from None


def names() -> list[str]:
    """The labs that have a state file."""
    home = zlab_home()
    try:
        entries = sorted(os.listdir(home))
    except FileNotFoundError:
        return []
    return [n for n in entries if os.path.isfile(os.path.join(home, n, STATE_FILE))]


def only_lab(name: str | None) -> str:
    """The lab a command means: the one named, or the only one that is up."""
    if name:
        return name
    labs = names()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise ConfigError("no lab is up (start one with `zlab up TOPOLOGY.yaml`)")
    raise ConfigError(f"several labs are up ({', '.join(labs)}): name one")


def remove(name: str) -> None:
    shutil.rmtree(lab_dir(name), ignore_errors=True)


def claim(directory: str, record: dict[str, Any]) -> None:
    """Make ``directory`` (a lab's, below :func:`zlab_home`) this process's, atomically, with
    ``record`` (and this pid) in its claim file; ConfigError when it is taken. The directory is
    built aside and renamed into place: a rename onto a directory that has content fails, so of
    two commands claiming one name exactly one wins, and nobody sees a claim half written."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".claim-", dir=parent)
    rec = {**record, "pid": os.getpid(), "pid_start": process_start(os.getpid()), "created": time.time()}
    with open(os.path.join(tmp, CLAIM_FILE), "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    try:
        os.rename(tmp, directory)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise ConfigError(taken_why(os.path.basename(directory), directory)) from None
        raise ConfigError(f"cannot create the lab directory {directory}: {e.strerror}") from None


def read_claim(directory: str) -> dict[str, Any] | None:
    """The claim record of a lab directory (None: none, or unreadable)."""
    try:
        with open(os.path.join(directory, CLAIM_FILE), encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def taken_why(name: str, directory: str) -> str:
    """Why the name of ``directory`` cannot be claimed, in one line that says what to do."""
    if os.path.isfile(os.path.join(directory, STATE_FILE)):
        return f"a lab named {name!r} is already up (`zlab down {name}` first, or --name)"
    rec = read_claim(directory) or {}
    if claimant_alive(rec):
        return (f"a lab named {name!r} is being started by another command "
                f"(zlab {rec.get('command', '?')}, pid {rec.get('pid')})")
    return (f"a lab named {name!r} was left by a command that died: `zlab down {name}` removes "
            f"what it started")


def process_start(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if there is no such
    process: with the pid it names one process, never a later one that reuses the number."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])          # field 22 of stat; the list starts at field 3
    except (IndexError, ValueError):
        return None


def claimant_alive(record: dict[str, Any]) -> bool:
    """Whether the command that claimed a directory still runs (same pid, same start time)."""
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    start = process_start(pid)
    return start is not None and start == record.get("pid_start")


def leftovers() -> list[str]:
    """Lab directories with no state file whose claiming command is gone: a `zlab up` or
    `zlab run` killed before it finished (or one written before claims existed)."""
    home = zlab_home()
    try:
        entries = sorted(os.listdir(home))
    except FileNotFoundError:
        return []
    out = []
    for n in entries:
        d = os.path.join(home, n)
        if n.startswith(".") or not os.path.isdir(d) or os.path.isfile(os.path.join(d, STATE_FILE)):
            continue
        if not claimant_alive(read_claim(d) or {}):
            out.append(n)
    return out

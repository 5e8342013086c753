"""The state file of an interactive lab (``zlab up``): ``.zlab/<name>/state.json``.

``zlab up`` starts the nodes detached and returns; every later command (in any
shell) finds them again through this file: which backend runs the lab, the
node processes or containers, their ports, where the keys are, and the fault
state the lab is in. ``.zlab/`` is per checkout (or ``$ZLAB_HOME``) and gitignored.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from lab.errors import ConfigError

STATE_FILE = "state.json"
MAX_NAME = 100      # bytes of a lab name, as of a scenario name: a file name holds 255


def zlab_home() -> str:
    """Where labs keep their state: ``$ZLAB_HOME``, else ``.zlab`` in the current directory."""
    return os.path.abspath(os.environ.get("ZLAB_HOME") or ".zlab")


def lab_dir(name: str) -> str:
    if (not name or "/" in name or "\0" in name or name.startswith(".")
            or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME):
        shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
        raise ConfigError(f"bad lab name {shown}: a lab name has 1 to {MAX_NAME} bytes, "
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

"""The node image, built without any container registry and reused by content hash.

``zlab-node:<hash>`` where the hash covers ``nodes/``, ``images/`` and the
package lists: the same sources give the same tag, and a present tag is
reused as it is. Its base is ``python:3.11-slim`` when the engine already
has that image (the dependencies are then installed in the build), else
zlab's own ``zlab-base:<hash>``: a Debian debootstrap carrying every
dependency, ``docker import``-ed once by ``images/build-base.sh`` and reused.

    python -m lab.image build [--force]   # build (or reuse) and print the tag
    python -m lab.image tag               # the tag the sources give, nothing built
    python -m lab.image prune             # remove node images of older sources
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab.dockerclient import docker_client
from lab.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]
NODES_DIR = ROOT / "nodes"
IMAGES_DIR = ROOT / "images"
DOCKERFILE = IMAGES_DIR / "Dockerfile.node"
BUILD_BASE = IMAGES_DIR / "build-base.sh"

NODE_REPO = "zlab-node"
BASE_REPO = "zlab-base"
SLIM_BASE = "python:3.11-slim"
# zlab's own base: real Debian package names only (debootstrap --include does not
# resolve virtual ones, hence python3-cffi-backend spelled out for pynacl).
DEBIAN_PACKAGES = ("python3", "python3-zmq", "python3-nacl", "python3-yaml", "python3-msgpack",
                   "python3-cffi-backend", "iproute2", "iptables")
# On a python:*-slim base: the same, from apt and PyPI.
SLIM_APT_PACKAGES = ("iproute2", "iptables")
SLIM_PIP_PACKAGES = ("pyzmq", "msgpack", "pynacl", "pyyaml")
HASH_LEN = 12
BUILD_TIMEOUT = 900.0        # s, for debootstrap and for the image build

Log = Callable[[str], None]


def _say(msg: str) -> None:
    print(f"zlab image: {msg}", file=sys.stderr, flush=True)


def _source_files(directory: Path) -> Iterator[Path]:
    """Files under ``directory`` that belong in the image, in a stable order."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:HASH_LEN]


def _packages_text() -> bytes:
    return "\n".join([*DEBIAN_PACKAGES, "--", *SLIM_APT_PACKAGES, "--", *SLIM_PIP_PACKAGES]).encode()


def content_hash(root: Path = ROOT) -> str:
    """Hash of nodes/, images/ and the package lists: the node image's tag."""
    parts: list[bytes] = [_packages_text()]
    for directory in (root / "nodes", root / "images"):
        for path in _source_files(directory):
            parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return _digest(parts)


def node_tag(root: Path = ROOT) -> str:
    return f"{NODE_REPO}:{content_hash(root)}"


def base_tag(root: Path = ROOT) -> str:
    """zlab's own base: depends only on the builder script and the Debian packages."""
    script = (root / "images" / "build-base.sh").read_bytes()
    packages = "\n".join(DEBIAN_PACKAGES).encode()
    return f"{BASE_REPO}:{_digest([script, packages])}"


def build_context(root: Path = ROOT) -> bytes:
    """The build context as a tar: the Dockerfile and nodes/, nothing else (never lab/)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(root / "images" / "Dockerfile.node"), arcname="Dockerfile")
        for path in _source_files(root / "nodes"):
            tar.add(str(path), arcname=str(path.relative_to(root)))
    return buf.getvalue()


def _has_image(client: Any, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


class _BuildLock:
    """One build per tag on this machine at a time (pytest-xdist workers all ask at once)."""

    def __init__(self, tag: str) -> None:
        name = "zlab-image-" + tag.replace(":", "-").replace("/", "-") + ".lock"
        self.path = Path(tempfile.gettempdir()) / name
        self.fd: int | None = None

    def __enter__(self) -> _BuildLock:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def install_commands() -> list[list[str]]:
    """What installs the base builder's one missing tool on a Debian-like host, in order."""
    return [["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]]


def ensure_debootstrap(tag: str, log: Log = _say, run: Run = _run) -> None:
    """Install debootstrap where we can (root with apt-get): a fresh machine needs no other step
    than the README's commands. Where we cannot, one line says what to install."""
    if shutil.which("debootstrap") is not None:
        return
    how = (f"install debootstrap (`sudo apt-get install debootstrap`), or make {SLIM_BASE} "
           "available to the engine (`docker load` it)")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BackendError(f"cannot build the base image {tag}: debootstrap is not installed; {how}")
    log("debootstrap is not installed: installing it with apt-get (once)")
    for argv in install_commands():
        try:
            proc = run(argv)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BackendError(f"`{' '.join(argv)}` failed ({e}); {how}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
            raise BackendError(f"`{' '.join(argv)}` exited {proc.returncode}"
                               f"{': ' + tail[0] if tail else ''}; {how}")
    if shutil.which("debootstrap") is None:
        raise BackendError(f"apt-get installed debootstrap but it is not on PATH; {how}")


def build_base(client: Any, tag: str, log: Log = _say, root: Path = ROOT) -> None:
    """debootstrap + docker import, through images/build-base.sh."""
    if shutil.which("docker") is None:
        raise BackendError(f"cannot build the base image {tag}: the docker command is not installed "
                           f"(or make {SLIM_BASE} available to the engine: `docker load` it)")
    if os.geteuid() != 0:
        raise BackendError(f"cannot build the base image {tag}: debootstrap needs root "
                           f"(run `sudo python -m lab.image build` once)")
    ensure_debootstrap(tag, log)
    log(f"building base {tag} with debootstrap (no registry needed; about a minute)")
    try:
        proc = subprocess.run(["sh", str(root / "images" / "build-base.sh"), tag, *DEBIAN_PACKAGES],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BackendError(f"building the base image {tag} took over {BUILD_TIMEOUT:.0f}s") from None
    if proc.returncode != 0 or not _has_image(client, tag):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BackendError(f"building the base image {tag} failed: {' | '.join(tail)}")


def build_node(client: Any, tag: str, base: str, log: Log = _say, root: Path = ROOT) -> None:
    slim = base == SLIM_BASE
    args = {"BASE": base, "INSTALL_DEPS": "1" if slim else "0",
            "APT_PACKAGES": " ".join(SLIM_APT_PACKAGES), "PIP_PACKAGES": " ".join(SLIM_PIP_PACKAGES)}
    log(f"building {tag} on {base}")
    import docker.errors

    try:
        client.images.build(fileobj=io.BytesIO(build_context(root)), custom_context=True, tag=tag,
                            buildargs=args, rm=True, forcerm=True, pull=False,
                            labels={"zlab.image": "node"}, timeout=BUILD_TIMEOUT)
    except docker.errors.BuildError as e:
        lines = [str(c.get("stream") or c.get("error") or "").strip() for c in e.build_log]
        tail = " | ".join(x for x in lines if x)[-600:]
        raise BackendError(f"building {tag} failed: {e.msg}: {tail}") from None
    except docker.errors.APIError as e:
        raise BackendError(f"building {tag} failed: {e.explanation or e}") from None


def ensure_image(client: Any | None = None, log: Log = _say, force: bool = False,
                 root: Path = ROOT) -> str:
    """The node image's tag, building it (and zlab's base if needed) only when missing."""
    if client is None:
        client = docker_client(timeout=BUILD_TIMEOUT)
    tag = node_tag(root)
    t0 = time.monotonic()
    with _BuildLock(tag):
        if not force and _has_image(client, tag):
            log(f"{tag} present, reused ({time.monotonic() - t0:.1f}s)")
            return tag
        if _has_image(client, SLIM_BASE):
            base = SLIM_BASE
        else:
            base = base_tag(root)
            if force or not _has_image(client, base):
                t1 = time.monotonic()
                build_base(client, base, log, root)
                log(f"base {base} built in {time.monotonic() - t1:.1f}s")
            else:
                log(f"base {base} present, reused")
        build_node(client, tag, base, log, root)
    log(f"{tag} built in {time.monotonic() - t0:.1f}s")
    return tag


def prune(client: Any, keep: str, log: Log = _say) -> list[str]:
    """Remove ``zlab-node`` images other than ``keep``. Never automatic: another session may
    still be about to start labs from an older tag. Images in use by a container stay."""
    import docker.errors

    removed = []
    for img in client.images.list(name=NODE_REPO):
        for tag in img.tags:
            if tag == keep:
                continue
            try:
                client.images.remove(tag)
                removed.append(tag)
            except docker.errors.APIError as e:
                log(f"kept {tag}: {e.explanation or e}")
    log(f"removed {len(removed)} older node image(s)")
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.image", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the node image unless it is present; print its tag")
    b.add_argument("--force", action="store_true", help="rebuild the base and node images")
    sub.add_parser("tag", help="print the tag the sources give, build nothing")
    sub.add_parser("prune", help="remove node images built from other sources (not in use)")
    args = parser.parse_args(argv)
    if args.cmd == "tag":
        print(node_tag())
        return 0
    try:
        if args.cmd == "prune":
            prune(docker_client(), node_tag())
            return 0
        print(ensure_image(force=args.force))
    except BackendError as e:
        print(f"zlab image: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The node image: content-hash tags, a context without lab/, base selection, reuse."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from lab import image
from lab.errors import BackendError

REPO = Path(image.__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the sources the image is made of (nodes/, images/) plus a lab/ that must stay out."""
    for d in ("nodes", "images"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "secret.py").write_text("x = 1\n")
    return tmp_path


def test_tag_is_a_content_hash_of_nodes_images_and_packages(tree: Path, monkeypatch) -> None:
    tag = image.node_tag(tree)
    assert tag.startswith("zlab-node:") and len(tag.split(":")[1]) == image.HASH_LEN
    assert image.node_tag(tree) == tag                              # stable
    (tree / "lab" / "secret.py").write_text("x = 2\n")
    assert image.node_tag(tree) == tag                              # lab/ is not in the image
    (tree / "nodes" / "__pycache__").mkdir(exist_ok=True)
    (tree / "nodes" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    assert image.node_tag(tree) == tag                              # nor are caches
    (tree / "nodes" / "units.py").write_text((tree / "nodes" / "units.py").read_text() + "\n# x\n")
    changed = image.node_tag(tree)
    assert changed != tag
    (tree / "images" / "Dockerfile.node").write_text("FROM scratch\n")
    assert image.node_tag(tree) != changed
    monkeypatch.setattr(image, "SLIM_PIP_PACKAGES", (*image.SLIM_PIP_PACKAGES, "extra"))
    assert image.node_tag(tree) not in (tag, changed)


def test_base_tag_ignores_nodes_but_not_the_builder(tree: Path) -> None:
    base = image.base_tag(tree)
    assert base.startswith("zlab-base:")
    (tree / "nodes" / "units.py").write_text("# changed\n")
    assert image.base_tag(tree) == base
    (tree / "images" / "build-base.sh").write_text("#!/bin/sh\n")
    assert image.base_tag(tree) != base


def test_context_holds_the_dockerfile_and_nodes_only(tree: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(image.build_context(tree))) as tar:
        names = tar.getnames()
    assert "Dockerfile" in names
    assert "nodes/agent.py" in names and "nodes/protocols/core.py" in names
    assert not any(n.startswith("lab") or "__pycache__" in n for n in names)
    assert all(n == "Dockerfile" or n.startswith("nodes/") for n in names)


def test_dockerfile_installs_what_a_node_needs() -> None:
    text = (REPO / "images" / "Dockerfile.node").read_text()
    assert "COPY nodes " in text and "COPY lab" not in text
    assert '"-m", "nodes.agent"' in text
    for pkg in ("iproute2", "iptables"):
        assert pkg in image.SLIM_APT_PACKAGES and pkg in image.DEBIAN_PACKAGES
    for mod, deb in (("pyzmq", "python3-zmq"), ("msgpack", "python3-msgpack"),
                     ("pynacl", "python3-nacl"), ("pyyaml", "python3-yaml")):
        assert mod in image.SLIM_PIP_PACKAGES and deb in image.DEBIAN_PACKAGES


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.builds: list[dict[str, Any]] = []

    def get(self, ref: str) -> str:
        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)
        return ref

    def build(self, **kw: Any) -> None:
        self.builds.append(kw)
        self.present.add(kw["tag"])


class FakeClient:
    def __init__(self, *present: str) -> None:
        self.images = FakeImages(set(present))


def test_present_image_is_reused_without_building(tree: Path) -> None:
    client = FakeClient(image.node_tag(tree))
    said: list[str] = []
    assert image.ensure_image(client, said.append, root=tree) == image.node_tag(tree)
    assert client.images.builds == []
    assert "reused" in said[0]


def test_slim_base_when_present_installs_deps_in_the_build(tree: Path) -> None:
    client = FakeClient(image.SLIM_BASE)
    tag = image.ensure_image(client, lambda _: None, root=tree)
    (build,) = client.images.builds
    assert build["tag"] == tag and build["pull"] is False
    assert build["buildargs"]["BASE"] == image.SLIM_BASE and build["buildargs"]["INSTALL_DEPS"] == "1"


def test_own_base_is_built_once_then_reused(tree: Path, monkeypatch) -> None:
    client = FakeClient()
    built: list[str] = []

    def fake_build_base(c: Any, tag: str, log: Any, root: Path) -> None:
        built.append(tag)
        c.images.present.add(tag)
    monkeypatch.setattr(image, "build_base", fake_build_base)
    said: list[str] = []
    image.ensure_image(client, said.append, root=tree)
    assert built == [image.base_tag(tree)]
    (build,) = client.images.builds
    assert build["buildargs"]["BASE"] == image.base_tag(tree) and build["buildargs"]["INSTALL_DEPS"] == "0"
    assert any("built in" in s for s in said)
    # the node sources change: a new node image on the same base, no second debootstrap
    (tree / "nodes" / "units.py").write_text("# changed\n")
    image.ensure_image(client, said.append, root=tree)
    assert built == [image.base_tag(tree)] and len(client.images.builds) == 2


def test_base_build_refuses_clearly_without_its_tools(tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(image.shutil, "which", lambda tool: None)
    with pytest.raises(BackendError, match="docker command is not installed"):
        image.build_base(FakeClient(), "zlab-base:x", lambda _: None, tree)


def test_missing_debootstrap_is_installed_with_apt_as_root(monkeypatch) -> None:
    installed: list[str] = []
    monkeypatch.setattr(image.shutil, "which",
                        lambda tool: "/usr/bin/" + tool if tool != "debootstrap" or installed else None)
    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    ran: list[list[str]] = []

    def run(argv: list[str]) -> Any:
        ran.append(argv)
        if argv[:2] == ["apt-get", "install"]:
            installed.append("debootstrap")
        return image.subprocess.CompletedProcess(argv, 0, "", "")

    said: list[str] = []
    image.ensure_debootstrap("zlab-base:x", said.append, run)
    assert ran == [["apt-get", "update", "-qq"],
                   ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]]
    assert any("installing it with apt-get" in s for s in said)
    ran.clear()
    image.ensure_debootstrap("zlab-base:x", said.append, run)       # present now: nothing to do
    assert ran == []


def test_missing_debootstrap_without_root_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(image.shutil, "which", lambda tool: None if tool == "debootstrap" else "/x")
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    with pytest.raises(BackendError, match=r"apt-get install debootstrap"):
        image.ensure_debootstrap("zlab-base:x", lambda _: None, lambda argv: None)


def test_a_failing_apt_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(image.shutil, "which", lambda tool: None if tool == "debootstrap" else "/x")
    monkeypatch.setattr(image.os, "geteuid", lambda: 0)

    def run(argv: list[str]) -> Any:
        return image.subprocess.CompletedProcess(argv, 100, "", "E: Unable to locate package debootstrap")

    with pytest.raises(BackendError, match=r"exited 100: E: Unable to locate package"):
        image.ensure_debootstrap("zlab-base:x", lambda _: None, run)


@pytest.mark.docker
def test_built_image_has_nodes_deps_and_net_tools_but_not_lab(zlab_image: str) -> None:
    from lab.backends.docker import docker_client
    script = ("import zmq, msgpack, nacl, yaml, nodes.agent, nodes.protocols.register, os, shutil;"
              "assert shutil.which('tc') and shutil.which('iptables');"
              "assert not os.path.exists('/opt/zlab/lab');"
              "import importlib.util as u; assert u.find_spec('lab') is None; print('ok')")
    out = docker_client().containers.run(zlab_image, entrypoint=["python3", "-c", script], remove=True,
                                         labels={"zlab.owner": "test-image"})
    assert out.decode().strip() == "ok"


def test_prune_keeps_the_current_tag_and_images_in_use() -> None:
    class Img:
        def __init__(self, *tags: str) -> None:
            self.tags = list(tags)

    class Images:
        removed: list[str] = []

        def list(self, name: str) -> list[Img]:
            assert name == image.NODE_REPO
            return [Img("zlab-node:new"), Img("zlab-node:old"), Img("zlab-node:busy")]

        def remove(self, tag: str) -> None:
            if tag == "zlab-node:busy":
                raise docker.errors.APIError("conflict: in use by a container")
            self.removed.append(tag)

    client = FakeClient()
    client.images = Images()  # type: ignore[assignment]
    said: list[str] = []
    assert image.prune(client, "zlab-node:new", said.append) == ["zlab-node:old"]
    assert any("kept zlab-node:busy" in s for s in said)

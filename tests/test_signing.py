"""ed25519 keys owned by the runtime (nodes/signing.py, lab/signkeys.py): what a core may
sign and verify, what a client signs, where the keys of a lab live."""

from __future__ import annotations

import os
import stat

import pytest

from lab.errors import BackendError
from lab.signkeys import ensure_signing_keys, load_signing_keys
from nodes.signing import CLIENTS, ClientSigner, Keyring, keyring_from_spec, request_bytes, sim_keys

NODES = ["n1", "n2", "n3"]


def test_sign_and_verify_and_everything_else_is_false() -> None:
    secrets, publics = sim_keys(7, NODES)
    n1, n2 = Keyring("n1", secrets["n1"], publics), Keyring("n2", secrets["n2"], publics)
    sig = n1.sign(b"prepare 1")
    assert n2.verify("n1", b"prepare 1", sig) and n1.signed == 1 and n2.verified == 1
    assert not n2.verify("n1", b"prepare 2", sig)        # other data
    assert not n2.verify("n3", b"prepare 1", sig)        # claims another signer
    assert not n2.verify("nobody", b"prepare 1", sig)
    for bad in (sig[:10], "text", None, bytes(64)):
        assert not n2.verify("n1", b"prepare 1", bad)
    with pytest.raises(RuntimeError):
        Keyring("n9", None, publics).sign(b"x")


def test_simulated_keys_follow_the_seed_and_signatures_are_deterministic() -> None:
    a, b, c = sim_keys(7, NODES), sim_keys(7, NODES), sim_keys(8, NODES)
    assert a == b and a[1]["n1"] != c[1]["n1"] and set(a[1]) == {*NODES, CLIENTS}
    k = Keyring("n1", a[0]["n1"], a[1])
    assert k.sign(b"m") == Keyring("n1", b[0]["n1"], b[1]).sign(b"m")


def test_a_shared_cache_answers_repeated_verifications() -> None:
    secrets, publics = sim_keys(1, NODES)
    cache: dict = {}
    sig = Keyring("n1", secrets["n1"], publics).sign(b"m")
    n2, n3 = (Keyring(n, secrets[n], publics, cache=cache) for n in ("n2", "n3"))
    assert n2.verify("n1", b"m", sig) and n3.verify("n1", b"m", sig)
    assert (n2.verified, n3.verified) == (1, 0)
    assert not n3.verify("n2", b"m", sig) and not n3.verify("n2", b"m", sig) and n3.verified == 1


def test_clients_sign_the_request_fields_only() -> None:
    secrets, publics = sim_keys(1, NODES)
    op = ClientSigner(secrets[CLIENTS]).sign_request({"f": "write", "key": "x", "value": 1,
                                                      "client": "c1", "seq": 4})
    ring = Keyring("n1", secrets["n1"], publics)
    assert ring.verify_client(request_bytes(op), op["sig"])
    assert not ring.verify_client(request_bytes({**op, "value": 2}), op["sig"])
    assert not ring.verify("n1", request_bytes(op), op["sig"])


def test_a_labs_keys_are_files_of_its_own_and_a_spec_carries_one_secret(tmp_path) -> None:
    keys = ensure_signing_keys(str(tmp_path / "sign"), NODES)
    again = ensure_signing_keys(str(tmp_path / "sign"), NODES)
    assert keys.secrets == again.secrets == load_signing_keys(str(tmp_path / "sign"), NODES).secrets
    for name in [*NODES, CLIENTS]:
        mode = os.stat(tmp_path / "sign" / f"{name}.key").st_mode
        assert stat.S_IMODE(mode) == 0o600
    spec = keys.spec("n2")
    assert spec["secret"] == keys.secrets["n2"].hex() and len(spec["public"]) == 4
    ring = keyring_from_spec("n2", spec)
    assert keyring_from_spec("n1", keys.spec("n1")).verify("n2", b"m", ring.sign(b"m"))
    op = keys.client_signer().sign_request({"f": "read", "key": "x", "client": "c", "seq": 1})
    assert ring.verify_client(request_bytes(op), op["sig"])
    (tmp_path / "sign" / "n3.key").write_text("zz\n")
    with pytest.raises(BackendError, match="n3.key"):
        load_signing_keys(str(tmp_path / "sign"), NODES)

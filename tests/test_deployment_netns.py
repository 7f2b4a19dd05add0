"""Deployment across hosts, made real on one machine with Linux network namespaces.

The SuperLink runs in one namespace and the SuperNodes in another, joined by a veth pair:
the nodes reach the server only through its veth address, over TLS, as devices on a LAN
would. Both namespaces and their addresses (198.18.213.0/30, from the range RFC 2544 sets
aside for benchmark networks) exist only for the test; no traffic leaves them. The test
skips if the host itself uses an address of that range, so nothing can be confused with it.
"""

import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from contextlib import contextmanager

import pytest
from cryptography import x509

from pfl_app.deploy import Processes, flwr_run, superlink_command, supernode_command, write_connection
from pfl_app.launch import flower_env, run_log, wait_for_port

from .helpers import (
    TINY,
    assert_registered_trained_and_stranger_refused,
    assert_run_completed,
    make_certs_and_keys,
    register_nodes,
)

SERVER_IP, DEVICE_IP = "198.18.213.1", "198.18.213.2"
TEST_NET = ipaddress.ip_network("198.18.213.0/30")
PORT = 9091  # each namespace has ports of its own: no clash with anything on the host
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _delete_namespace(ns: str) -> None:
    # Kill whatever still runs inside it (only processes this test started can be there),
    # so the namespace, and the veth end inside it, really go away.
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


@pytest.fixture
def namespaces():
    """A server and a device network namespace joined by a veth pair; yields their names."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2)")
    host_addresses = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for word in host_addresses.split():
        if "/" in word and word[0].isdigit() and "." in word:
            if ipaddress.ip_interface(word).network.overlaps(TEST_NET):
                pytest.skip(f"the host uses {word}, which overlaps the test's {TEST_NET}")
    tag = secrets.token_hex(3)
    server, device = f"pfl-srv-{tag}", f"pfl-dev-{tag}"
    made = []
    try:
        for ns in (server, device):
            _ip("netns", "add", ns)
            made.append(ns)
        # Both ends are created inside the namespaces: nothing appears in the host's own.
        _ip("link", "add", f"pfls{tag}", "netns", server, "type", "veth", "peer", "name", f"pfld{tag}", "netns", device)
        for ns, dev, addr in ((server, f"pfls{tag}", SERVER_IP), (device, f"pfld{tag}", DEVICE_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")  # the runtimes talk to their SuperLink/SuperNode on loopback
    except subprocess.CalledProcessError as err:
        for ns in made:
            _delete_namespace(ns)
        pytest.skip(f"cannot set up network namespaces: {' '.join(err.cmd)}: {err.stderr.strip()}")
    try:
        yield server, device
    finally:
        for ns in made:
            _delete_namespace(ns)


@contextmanager
def inside(ns: str):
    """Run this thread, and every process it starts meanwhile, in network namespace ``ns``.

    Lets the ``flwr`` CLI helpers (``flwr_run``, ``wait_for_run``) and ``wait_for_port``
    reach the SuperLink in its namespace unchanged, as an operator on the server would.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")


def _san(cert_path) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_superlink_command_listens_where_asked():
    assert superlink_command(9091)[1:3] == ["--host", "127.0.0.1"]  # one machine unless told otherwise
    assert superlink_command(9091, host="0.0.0.0")[1:3] == ["--host", "0.0.0.0"]


def test_make_certs_covers_every_address_given_and_loopback(tmp_path, project_dir):
    tls, _ = make_certs_and_keys(project_dir, tmp_path, [SERVER_IP, "superlink.lan"], ())
    san = _san(tls.server_cert)
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a) for a in (SERVER_IP, "127.0.0.1")}
    assert san.get_values_for_type(x509.DNSName) == ["superlink.lan"]
    refused = subprocess.run(["bash", str(project_dir / "scripts" / "deploy" / "make-certs.sh"), "0.0.0.0",
                              str(tmp_path / "bind-all")], capture_output=True, text=True)
    assert refused.returncode != 0 and not (tmp_path / "bind-all").exists()


@pytest.mark.simulation
def test_devices_in_another_namespace_train_over_tls_and_an_unregistered_one_is_refused(
        namespaces, tmp_path, project_dir):
    server, device = namespaces
    names = ("node-0", "node-1", "stranger")
    tls, keys = make_certs_and_keys(project_dir, tmp_path, [SERVER_IP], names)
    # The devices dial the server's veth address: TLS holds only if the certificate names it.
    assert ipaddress.ip_address(SERVER_IP) in _san(tls.server_cert).get_values_for_type(x509.IPAddress)
    home = tmp_path / "flwr-home"
    env = flower_env(home, project_dir)
    env.pop("HOST", None)  # superlink.sh's default, every interface, is what is under test
    env.update(PORT=str(PORT), DATABASE=str(tmp_path / "state.db"))
    procs = Processes(env, tmp_path / "logs")
    deploy = project_dir / "scripts" / "deploy"
    netns = ["ip", "netns", "exec"]
    try:
        superlink = procs.start("superlink", [*netns, server, "bash", str(deploy / "superlink.sh"),
                                              str(tls.ca_cert.parent)])
        with inside(server):
            wait_for_port(PORT, process=superlink)
            # flwr on the server itself, through loopback (127.0.0.1 is in the certificate too)
            write_connection(home, "lan", f"127.0.0.1:{PORT}", root_cert=tls.ca_cert)
            register_nodes(keys, names[:2], "lan", env)
        for i, name in enumerate(names[:2]):
            # the device's own command, as docs/deployment.md gives it
            procs.start(name, [*netns, device, "env", f"STATE_DIR={tmp_path / name}", f"PORT={9094 + i}",
                               "bash", str(deploy / "supernode.sh"), f"{SERVER_IP}:{PORT}", str(i), "2",
                               str(tls.ca_cert), str(keys / name)])
        stranger = procs.start("stranger", [*netns, device, *supernode_command(
            f"{SERVER_IP}:{PORT}", 9096, 1, 2, state_dir=tmp_path / "stranger", root_cert=tls.ca_cert,
            auth_key=keys / "stranger")])
        config = {**TINY, "num-server-rounds": 1, "data.partitioner": "iid",
                  "results-dir": str(tmp_path / "results"), "run-name": "lan"}
        with inside(server):
            run_id = flwr_run(project_dir, "lan", config, env)
            assert_run_completed(run_id, "lan", env)
            assert "round 1/1 | up" in run_log(run_id, env, "lan")
        # Each side really ran in its namespace, where the veth is the only way across.
        for name, ns in (("superlink", server), ("node-0", device), ("node-1", device)):
            where = subprocess.run(["ip", "netns", "identify", str(procs.procs[name].pid)],
                                   capture_output=True, text=True).stdout.split()
            assert where == [ns], (name, where)
        assert_registered_trained_and_stranger_refused(tmp_path, "lan", stranger, tmp_path / "logs")
    finally:
        procs.stop_all()

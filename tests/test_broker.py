"""LocalBroker: a real mosquitto on a free loopback port, with users, TLS and stop/start on the same port."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.broker import BrokerError, LocalBroker, make_test_pki

PUB = "/usr/bin/mosquitto_pub"


def pub(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [PUB, "-h", "127.0.0.1", "-p", str(port), "-t", "t", "-m", "1", "-q", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10)


def test_start_stop_start_same_port_and_passwords() -> None:
    with LocalBroker(users={"gw": "s3cret"}) as broker:
        assert broker.port != 1883 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert pub(broker.port, "-u", "gw", "-P", "s3cret").returncode == 0
        assert pub(broker.port, "-u", "gw", "-P", "wrong").returncode != 0
        assert pub(broker.port).returncode != 0, "anonymous access must be refused when users are set"
        port = broker.port
        broker.stop()
        assert not broker.running
        assert pub(port, "-u", "gw", "-P", "s3cret").returncode != 0, "an outage is an outage"
        broker.start()
        assert broker.port == port and pub(port, "-u", "gw", "-P", "s3cret").returncode == 0
    assert not broker.workdir.exists()


def test_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    with LocalBroker(tls=pki) as broker:
        assert broker.url.startswith("mqtts://")
        base = ["-h", "localhost", "--cafile", str(pki.ca_cert)]
        ok = pub(broker.port, *base[2:], "--cert", str(pki.client_cert), "--key", str(pki.client_key))
        assert ok.returncode == 0, ok.stderr
        assert pub(broker.port, *base[2:]).returncode != 0, "a client without a certificate got in"


def test_bad_config_is_reported_with_mosquittos_words(tmp_path: Path) -> None:
    with LocalBroker() as first:
        clash = LocalBroker(port=first.port)  # the port is taken
        with pytest.raises(BrokerError, match="mosquitto exited at start-up"):
            clash.start(timeout=5)
        clash.close()

"""A real mosquitto started and stopped by Python: the demo's embedded broker and every test's broker.

:class:`LocalBroker` writes a config into its own work directory, starts ``/usr/sbin/mosquitto`` on a free
loopback port (never the system broker's 1883), waits until it accepts connections and stops it cleanly.
``stop()`` followed by ``start()`` brings it back on the same port, which is how tests and benchmarks
simulate an uplink outage. Options: username/password (a real ``mosquitto_passwd`` file), an ACL file, TLS
with a CA and a required client certificate (:func:`make_test_pki` generates one for tests), persistence.

    with LocalBroker() as broker:             # or: async with LocalBroker() as broker:
        print(broker.url)                      # mqtt://127.0.0.1:40231
        broker.stop(); broker.start()          # an outage
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pwd
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cityedge.errors import CityedgeError

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


class BrokerError(CityedgeError):
    """The local broker could not be started or stopped."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener and its clients (all paths)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the CA and presents the client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_test_pki(directory: str | os.PathLike[str], *, client_cn: str = "gw-test", days: int = 2) -> TlsFiles:
    """Generate a throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate.

    For tests and the demo only: real deployments use the city's PKI (see deploy/mosquitto/README.md).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("cityedge test CA"))
        .issuer_name(name("cityedge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    files = TlsFiles(
        out / "ca.crt", out / "server.crt", out / "server.key", out / "client.crt", out / "client.key"
    )
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, server in (
        (files.server_cert, files.server_key, "localhost", True),
        (files.client_cert, files.client_key, client_cn, False),
    ):
        cert, key = leaf(cn, server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_path)
    return files


class LocalBroker:
    """A mosquitto process of our own on a loopback port. Sync and async context manager.

    ``users``: username → password; when given, anonymous access is refused.
    ``acl``: text of a mosquitto ACL file (``user``/``topic``/``pattern`` lines).
    ``tls``: serve TLS on the port and require a client certificate signed by ``tls.ca_cert``.
    ``persistence``: keep retained messages and queued QoS 1 messages across :meth:`stop`/:meth:`start`.
    ``config``: a complete mosquitto configuration to run instead of the generated one (e.g. the example in
    deploy/mosquitto/); it must listen on ``host``:``port``. Logging to stderr is added, so start-up works.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        binary: str = MOSQUITTO,
        max_queued_messages: int = 100_000,
        config: str | None = None,
    ) -> None:
        if not Path(binary).exists():
            raise BrokerError(
                f"mosquitto not found at {binary}",
                hint="install it (Debian: apt-get install mosquitto) or pass --broker mqtt://HOST:PORT",
            )
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise BrokerError(f"LocalBroker listens on loopback only, not {host!r}")
        self.host = host
        self.port = port or free_port(host)
        self.users = dict(users or {})
        self.acl = acl
        self.tls = tls
        self.persistence = persistence
        self.binary = binary
        self.max_queued_messages = max_queued_messages
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="cityedge-mosq-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        if config is None:
            self._write_config()
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self.users:  # written to <workdir>/passwd for the given config to use
                self._write_passwords()
            self.config_path.write_text(
                config + "\n# added by LocalBroker\n" + "\n".join(self._run_lines()) + "\n"
            )

    @property
    def url(self) -> str:
        """``mqtt://host:port`` (``mqtts://`` with TLS)."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# generated by gateway.broker.LocalBroker",
            "per_listener_settings false",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            *self._run_lines(),
            "connection_messages true",
            f"max_queued_messages {self.max_queued_messages}",
            f"listener {self.port} {self.host}",
        ]
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self._write_passwords()}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.workdir / "acl"
            acl.write_text(self.acl)
            lines.append(f"acl_file {acl}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_passwords(self) -> Path:
        pw = self.workdir / "passwd"
        pw.write_text("")
        pw.chmod(0o600)
        for user, password in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True, capture_output=True)
        return pw

    @staticmethod
    def _run_lines() -> list[str]:
        return [
            # mosquitto started as root would switch to the 'mosquitto' user and lose access to our files
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "# stderr is read by start() to know that *this* process listens, then copied to mosquitto.log",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]

    # ------------------------------------------------------------------ sync control
    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it says it is running and accepts TCP connections on the port."""
        if self.running:
            return
        proc = self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            bufsize=0,  # unbuffered: readline() must not read ahead of what select() reported
            start_new_session=True,  # Ctrl-C in a terminal goes to the agent, which stops us cleanly
        )
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            # the port answering alone could be someone else's listener: wait for *our* "running" line
            while not any(" running" in line for line in seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise BrokerError(f"mosquitto did not start on port {self.port} within {timeout:g} s")
                if not sel.select(left):
                    continue
                line = proc.stderr.readline().decode(errors="replace")
                if line:
                    seen.append(line)
                else:  # end of stderr: mosquitto exited
                    proc.wait()
                    self._proc = None
                    msg = "".join(seen).strip()
                    raise BrokerError(
                        f"mosquitto exited at start-up on port {self.port}: {msg}",
                        hint=f"config: {self.config_path}",
                    )
        with self.log_path.open("a") as log:
            log.writelines(seen)
        threading.Thread(target=self._copy_log, args=(proc,), daemon=True, name="mosquitto-log").start()
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return
            time.sleep(0.01)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on port {self.port} within {timeout:g} s")

    def _copy_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(OSError, ValueError), self.log_path.open("ab") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after ``timeout``). The port stays ours for :meth:`start`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL mosquitto (a crash rather than a clean stop)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the work directory (if we created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ async control
    async def astart(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def astop(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def __aenter__(self) -> LocalBroker:
        await self.astart()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

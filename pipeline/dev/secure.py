"""The secured local stack's secrets (``roomstream stack up --secure``): a CA of its own, the
brokers' TLS certificate, and the SCRAM-SHA-512 users of Kafka, all under ``<stack_dir>/secrets``.

Everything is made with the JDK's ``keytool``, which the broker needs anyway: the CA signs one
certificate for 127.0.0.1 that every node presents on its SASL_SSL listener; clients trust
``ca.pem``. Two users exist: ``admin`` (the brokers among themselves) and ``roomstream`` (every
Roomstream process). Passwords are random, kept in files readable by their owner only, and
passed to keytool through its environment, never its arguments. The one exception is Kafka's
storage tool, which takes the SCRAM users only as arguments: it runs once, for a second, when a
node's storage is formatted, with the local stack's generated passwords.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.config import Settings
from pipeline.dev.tools import run_tool
from pipeline.errors import MissingBinary

MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "admin"
CLIENT_USER = "roomstream"
_STOREPASS_ENV = "ROOMSTREAM_STACK_STOREPASS"  # keytool reads it through -storepass:env


class StackSecurity:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.stack_dir / "secrets"
        self.ca_pem = self.dir / "ca.pem"
        self.ca_store = self.dir / "ca.p12"
        self.keystore = self.dir / "broker.p12"
        self.truststore = self.dir / "truststore.p12"
        self.storepass_file = self.dir / "store.password"

    def password_file(self, user: str) -> Path:
        return self.dir / f"kafka-{user}.password"

    def _secret(self, path: Path) -> str:
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def password(self, user: str) -> str:
        return self._secret(self.password_file(user))

    def _keytool(self, command: str, keystore: Path, alias: str, *args: str) -> None:
        """Run keytool's ``command`` on the entry ``alias`` of the PKCS12 store ``keystore``."""
        java_home = self.settings.java_home
        keytool = (
            str(java_home / "bin" / "keytool")
            if java_home and (java_home / "bin" / "keytool").exists()
            else shutil.which("keytool")
        )
        if keytool is None:
            raise MissingBinary(
                "'keytool' (the JDK's) was not found; install a JDK (apt-get install "
                "openjdk-17-jdk-headless) to make the secured stack's certificates"
            )
        env = {**os.environ, _STOREPASS_ENV: self._secret(self.storepass_file)}
        store = ("-keystore", str(keystore), "-storetype", "PKCS12")
        run_tool(
            [keytool, command, *store, "-storepass:env", _STOREPASS_ENV, "-alias", alias, *args],
            f"keytool {command} failed while making the stack's certificates",
            env=env,
        )

    def ensure(self, progress: Callable[[str], None]) -> None:
        """Make the CA, the brokers' certificate and the users' passwords, once."""
        for user in (BROKER_USER, CLIENT_USER):
            self.password(user)
        if self.keystore.exists() and self.ca_pem.exists() and self.truststore.exists():
            return
        progress(f"making a CA and the brokers' certificate in {self.dir} ...")
        for path in (self.ca_store, self.keystore, self.truststore, self.ca_pem):
            path.unlink(missing_ok=True)
        san = "SAN=ip:127.0.0.1,dns:localhost"
        csr, crt = self.dir / "broker.csr", self.dir / "broker.crt"
        ca, broker = "ca", "broker"
        self._keytool(
            "-genkeypair", self.ca_store, ca, "-dname", "CN=Roomstream local stack CA",
            "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
            "-ext", "bc:c", "-ext", "KeyUsage:c=keyCertSign,cRLSign",
        )  # fmt: skip
        self._keytool("-exportcert", self.ca_store, ca, "-rfc", "-file", str(self.ca_pem))
        self._keytool(
            "-genkeypair", self.keystore, broker, "-dname", "CN=127.0.0.1",
            "-keyalg", "RSA", "-keysize", "2048", "-validity", "825", "-ext", san,
        )  # fmt: skip
        self._keytool("-certreq", self.keystore, broker, "-file", str(csr))
        self._keytool(
            "-gencert", self.ca_store, ca, "-infile", str(csr), "-outfile", str(crt),
            "-rfc", "-validity", "825", "-ext", san,
            "-ext", "KeyUsage=digitalSignature,keyEncipherment", "-ext", "EKU=serverAuth",
        )  # fmt: skip
        self._keytool("-importcert", self.keystore, ca, "-file", str(self.ca_pem), "-noprompt")
        self._keytool("-importcert", self.keystore, broker, "-file", str(crt))
        self._keytool("-importcert", self.truststore, ca, "-file", str(self.ca_pem), "-noprompt")
        csr.unlink(missing_ok=True)

    def broker_properties(self, listener: str) -> dict[str, str]:
        """A node's TLS and SASL settings for its client (and inter-broker) listener."""
        storepass = self._secret(self.storepass_file)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self.password(BROKER_USER)}";'
        )
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.{listener.lower()}.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": storepass,
            "ssl.key.password": storepass,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.truststore),
            "ssl.truststore.password": storepass,
            "ssl.client.auth": "none",
        }

    def format_args(self) -> list[str]:
        """The storage tool's arguments that create the SCRAM users with the cluster."""
        return [
            arg
            for user in (BROKER_USER, CLIENT_USER)
            for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={self.password(user)}]")
        ]

    def admin_client_config(self) -> dict[str, str]:
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": BROKER_USER,
            "sasl.password": self.password(BROKER_USER),
            "ssl.ca.location": str(self.ca_pem),
        }

    def client_env(self) -> Iterator[tuple[str, str]]:
        """The settings that make a Roomstream process a client of the secured stack."""
        yield "ROOMSTREAM_KAFKA_SASL_USERNAME", CLIENT_USER
        yield "ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE", str(self.password_file(CLIENT_USER))
        yield "ROOMSTREAM_KAFKA_CA_FILE", str(self.ca_pem)

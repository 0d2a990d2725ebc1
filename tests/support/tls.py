"""Secured Temporal endpoints for tests, in front of the plain-text dev server:

- `MutualTlsProxy`: terminates TLS (ALPN h2) and demands a client certificate signed by the
  test CA, as an mTLS cluster or Temporal Cloud's mTLS endpoint does; then relays the bytes.
- `ApiKeyProxy`: a gRPC endpoint over TLS that refuses every call whose `authorization`
  metadata is not `Bearer <key>` (UNAUTHENTICATED), as an API-key endpoint does; the others
  it forwards to the dev server. It records the authorization values it saw.

Certificates are made fresh per test run with `cryptography` (`TestPki`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass
class TestPki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and client certificates."""

    __test__ = False  # not a test class, whatever its name says
    directory: Path
    ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("tempay test CA"))
            .issuer_name(_name("tempay test CA"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        _write(self.ca_path, self.ca_cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, name: str, *, server: bool) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Pair(
            cert=_write(
                self.directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)
            ),
            key=_write(self.directory / f"{name}-key.pem", key_pem),
        )


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class MutualTlsProxy:
    address: str  # host:port clients connect to
    handshakes: int = 0  # TLS sessions that presented a valid client certificate


@contextlib.asynccontextmanager
async def mutual_tls_proxy(
    pki: TestPki, server: Pair, upstream: str
) -> AsyncIterator[MutualTlsProxy]:
    """TLS with a required client certificate (signed by `pki`'s CA), ALPN h2, in front of
    the plain-text `upstream` (host:port)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_path))
    context.load_cert_chain(str(server.cert), str(server.key))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    up_host, up_port = _host_port(upstream)
    proxy = MutualTlsProxy(address="")
    tasks: set[asyncio.Task[Any]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
        except OSError:
            writer.close()
            return
        both = [
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ]
        tasks.update(both)
        try:
            await asyncio.gather(*both)
        finally:
            tasks.difference_update(both)

    server_ = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    port = server_.sockets[0].getsockname()[1]
    proxy.address = f"127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server_.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server_.wait_closed(), 5)


@dataclass
class ApiKeyProxy:
    address: str
    seen: list[str] = field(default_factory=list)  # each call's authorization metadata


class _Forward(grpc.GenericRpcHandler):
    """Every unary call, checked for the key, then forwarded as bytes to the dev server."""

    def __init__(self, key: str, channel: grpc.aio.Channel, seen: list[str]) -> None:
        self._key, self._channel, self._seen = key, channel, seen

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        forward: Callable[..., Any] = self._channel.unary_unary(method)

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata() or ())
            authorization = str(metadata.get("authorization", ""))
            self._seen.append(authorization)
            if authorization != f"Bearer {self._key}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
            passed = [(k, v) for k, v in metadata.items() if k != "authorization"]
            try:
                return bytes(await forward(request, metadata=passed))
            except grpc.aio.AioRpcError as exc:  # Temporal's answer, passed on as it is
                await context.abort(
                    exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ())
                )
                raise

        return grpc.unary_unary_rpc_method_handler(call)


@contextlib.asynccontextmanager
async def api_key_proxy(
    key: str, pki: TestPki, server: Pair, upstream: str
) -> AsyncIterator[ApiKeyProxy]:
    channel = grpc.aio.insecure_channel(upstream)
    proxy = ApiKeyProxy(address="")
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers([_Forward(key, channel, proxy.seen)])
    credentials = grpc.ssl_server_credentials([(server.key.read_bytes(), server.cert.read_bytes())])
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    await grpc_server.start()
    proxy.address = f"127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await grpc_server.stop(grace=None)
        await channel.close()

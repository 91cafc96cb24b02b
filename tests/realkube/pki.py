"""Certificates and keys for the test control plane, made with the openssl CLI.

One CA signs everything: the API server's serving certificate (its SANs cover the bridge
address pods reach it on, 127.0.0.1 and the `kubernetes` Service names), one client
certificate per component (the name is the user, the organisation the group, as the API
server's x509 authenticator reads them) and one per node (`system:node:<name>` in
`system:nodes`, so the Node authorizer and NodeRestriction apply to our kubelet exactly as
to a real one). The service-account signing key is RSA; the rest are EC P-256 (fast to make).
"""

from __future__ import annotations

import base64
import dataclasses
import pathlib
import subprocess

import yaml

DAYS = "3650"


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


@dataclasses.dataclass(frozen=True)
class Identity:
    """A client certificate and its key, as files."""

    cert: pathlib.Path
    key: pathlib.Path


class PKI:
    """The files under `<state>/pki`; `ensure_*` create what is missing, idempotently."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> pathlib.Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> pathlib.Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> pathlib.Path:
        return self.dir / "sa.pub"

    def ensure_ca(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not self.ca_cert.exists():
            _openssl(
                "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", DAYS, "-subj", "/CN=kubevine-test-ca",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                cwd=self.dir,
            )  # fmt: skip
        if not self.sa_key.exists():
            _openssl("genrsa", "-out", "sa.key", "2048", cwd=self.dir)
            _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.dir)

    def _sign(self, name: str, subject: str, extensions: str) -> Identity:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        if cert.exists() and key.exists():
            return Identity(cert, key)
        (self.dir / f"{name}.ext").write_text(extensions)
        _openssl(
            "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", key.name, "-out", f"{name}.csr", "-subj", subject,
            cwd=self.dir,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", cert.name, "-days", DAYS, "-extfile", f"{name}.ext",
            cwd=self.dir,
        )  # fmt: skip
        (self.dir / f"{name}.csr").unlink()
        (self.dir / f"{name}.ext").unlink()
        return Identity(cert, key)

    def serving(self, name: str, ips: list[str], dns: list[str]) -> Identity:
        sans = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{d}" for d in dns)])
        return self._sign(
            name,
            f"/CN={name}",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
        )

    def client(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Identity:
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
        return self._sign(
            name,
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )


def _b64(path: pathlib.Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: pathlib.Path, server: str, ca: pathlib.Path, identity: Identity, *, user: str, embed: bool = True
) -> pathlib.Path:
    """A kubeconfig for one identity; `embed` puts the certificates inside (portable, for users)."""
    if embed:
        cluster = {"server": server, "certificate-authority-data": _b64(ca)}
        creds = {"client-certificate-data": _b64(identity.cert), "client-key-data": _b64(identity.key)}
    else:
        cluster = {"server": server, "certificate-authority": str(ca)}
        creds = {"client-certificate": str(identity.cert), "client-key": str(identity.key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubevine-test", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "kubevine-test", "context": {"cluster": "kubevine-test", "user": user}}],
        "current-context": "kubevine-test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path

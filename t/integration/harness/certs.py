"""Test certificates, made with GnuTLS's `certtool` at run time in a temp dir.

Two CAs ("Test CA" and an unrelated "Other CA") and, signed by them, the
certificates the TLS tests need: a backend's for backend.test (DNS and IP
127.0.0.1), mailroute's own for router.test (and a second one for a reload),
an expired backend certificate, a backend certificate from the other CA,
client certificates from both CAs, and one for "*.sni.test" (SNI tests).
Keys are ECDSA P-256: quick to make and to use.

This is test scaffolding, not a PKI: the keys are world-readable (Dovecot's
and Postfix's unprivileged processes read them) and live as long as the run.
"""

import os
import ssl

from .procs import run

# certtool templates. Validity runs from now unless a template gives
# activation/expiration dates.
CA_TEMPLATE = """\
cn = "{cn}"
organization = "mailroute tests"
ca
cert_signing_key
crl_signing_key
expiration_days = 30
"""

SERVER_TEMPLATE = """\
cn = "{cn}"
organization = "mailroute tests"
{names}
tls_www_server
signing_key
encryption_key
{validity}
"""

CLIENT_TEMPLATE = """\
cn = "{cn}"
organization = "mailroute tests"
tls_www_client
signing_key
expiration_days = 30
"""

VALID = "expiration_days = 30"
# Valid once, long ago: only the dates are wrong, the chain is fine.
EXPIRED = 'activation_date = "2020-01-01 00:00:00"\nexpiration_date = "2021-01-01 00:00:00"'


def _names(dns=(), ips=()):
    lines = [f'dns_name = "{name}"' for name in dns]
    lines += [f'ip_address = "{ip}"' for ip in ips]
    return "\n".join(lines)


class Cert:
    """One certificate: .cert and .key are paths to PEM files."""

    def __init__(self, directory, name):
        self.name = name
        self.cert = os.path.join(directory, f"{name}.pem")
        self.key = os.path.join(directory, f"{name}.key")

    def pem(self):
        with open(self.cert) as f:
            return f.read()

    def der(self):
        """The certificate in DER, as ssl.SSLSocket.getpeercert(True) gives it."""
        return ssl.PEM_cert_to_DER_cert(self.pem())


class Certs:
    """Generates everything in `directory` on generate(); the attributes are
    Cert objects: ca, other_ca, backend, backend_expired, backend_other_ca,
    router, router_new, sni, client, client_other_ca."""

    def __init__(self, directory):
        self.dir = str(directory)

    def generate(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.ca = self._ca("ca", "mailroute Test CA")
        self.other_ca = self._ca("other-ca", "mailroute Other CA")
        backend_names = _names(dns=["backend.test"], ips=["127.0.0.1"])
        router_names = _names(dns=["router.test"], ips=["127.0.0.1"])
        self.backend = self._server("backend", "backend.test", backend_names, self.ca)
        self.backend_expired = self._server("backend-expired", "backend.test", backend_names,
                                            self.ca, EXPIRED)
        self.backend_other_ca = self._server("backend-other-ca", "backend.test", backend_names,
                                             self.other_ca)
        self.router = self._server("router", "router.test", router_names, self.ca)
        self.router_new = self._server("router-new", "router.test", router_names, self.ca)
        self.sni = self._server("sni", "sni.test", _names(dns=["*.sni.test"]), self.ca)
        self.client = self._signed("client", CLIENT_TEMPLATE.format(cn="client.test"), self.ca)
        self.client_other_ca = self._signed("client-other-ca",
                                            CLIENT_TEMPLATE.format(cn="stranger.test"),
                                            self.other_ca)
        return self

    # --- certtool ------------------------------------------------------------

    def _certtool(self, *args):
        result = run(["certtool", *args])
        assert result.returncode == 0, f"certtool {' '.join(args)} failed:\n{result.stderr}"

    def _template(self, name, text):
        path = os.path.join(self.dir, f"{name}.tmpl")
        with open(path, "w") as f:
            f.write(text)
        return path

    def _private_key(self, cert):
        self._certtool("--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
                       "--outfile", cert.key)
        os.chmod(cert.key, 0o644)

    def _ca(self, name, cn):
        cert = Cert(self.dir, name)
        self._private_key(cert)
        template = self._template(name, CA_TEMPLATE.format(cn=cn))
        self._certtool("--generate-self-signed", "--load-privkey", cert.key,
                       "--template", template, "--outfile", cert.cert)
        return cert

    def _signed(self, name, template_text, issuer):
        cert = Cert(self.dir, name)
        self._private_key(cert)
        template = self._template(name, template_text)
        self._certtool("--generate-certificate", "--load-privkey", cert.key,
                       "--load-ca-certificate", issuer.cert,
                       "--load-ca-privkey", issuer.key,
                       "--template", template, "--outfile", cert.cert)
        return cert

    def _server(self, name, cn, names, issuer, validity=VALID):
        text = SERVER_TEMPLATE.format(cn=cn, names=names, validity=validity)
        return self._signed(name, text, issuer)

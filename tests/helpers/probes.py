"""Functional probes of distilled apps: what a user of each app would call proof that it works.

Each probe runs inside private network and mount namespaces (`run_probe` re-executes this file under
`unshare --net --mount`), gives the distilled root what a container runtime would (a /dev and a
/proc, mounted only in that namespace), starts the app with `chroot` (as the app's own user where
it has one), talks to it on 127.0.0.1, and prints a JSON result. Nothing listens anywhere else.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))

from netns_http import wait_for_port as wait_port  # noqa: E402


def run_probe(name: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run probe `name` in a fresh network namespace and return its JSON result."""
    result = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "--", sys.executable, str(HERE / "probes.py"), name, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"probe {name} crashed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


# -- helpers (inside the namespace) ------------------------------------------------------------------


def runtime_mounts(root: str) -> None:
    """/dev and /proc inside the root, as runc or Docker mount them (this namespace only)."""
    for name, command in (("dev", ["mount", "--rbind", "/dev"]), ("proc", ["mount", "-t", "proc", "proc"])):
        target = Path(root) / name
        target.mkdir(exist_ok=True)
        subprocess.run([*command, str(target)], check=True)


def first_of(root: str, *candidates: str) -> str:
    """The first of `candidates` the distilled root has (a /usr/local build before Debian's package)."""
    return next((c for c in candidates if (Path(root) / c.lstrip("/")).exists()), candidates[-1])


def ids(root: Path, user: str) -> str:
    """`uid:gid` of `user` in the distilled root's /etc/passwd (chroot --userspec needs numbers)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return f"{fields[2]}:{fields[3]}"
    raise AssertionError(f"{user} is not in {root}/etc/passwd")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = process.stderr.read() if process.stderr else b""
    if process.stderr:
        process.stderr.close()
    return output.decode("utf-8", "replace")[-2000:]


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for localhost, app.test and 127.0.0.1 (cryptography), with the key
    identifiers and key usages that strict verifiers (Python >= 3.13's default context) require."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distill test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
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
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.DNSName("app.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def tls_server(cert: Path, key: Path, port: int = 8443) -> http.server.HTTPServer:
    """A small HTTPS server (host Python) answering `hello over TLS`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello over TLS\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status, response.read().decode("utf-8", "replace")


# -- probes ------------------------------------------------------------------------------------------


def probe_nginx(root: str, tls_dir: str) -> dict[str, Any]:
    """HTTP and HTTPS, workers under the `user` account, and a reload."""
    out = Path(root)
    ca, cert, key = make_tls(Path(tls_dir))
    (out / "etc/nginx/tls").mkdir(exist_ok=True)
    for source in (cert, key):
        (out / "etc/nginx/tls" / source.name).write_bytes(source.read_bytes())
    (out / "etc/nginx/sites-enabled/tls").write_text(
        "server { listen 443 ssl; server_name localhost; ssl_certificate /etc/nginx/tls/server.pem;\n"
        "  ssl_certificate_key /etc/nginx/tls/server.key; root /var/www/html; index index.nginx-debian.html index.html; }\n"
    )
    server = subprocess.Popen(["chroot", root, "/usr/sbin/nginx", "-g", "daemon off;"], stderr=subprocess.PIPE)
    result: dict[str, Any] = {"started": wait_port(80, server) and wait_port(443, server)}
    if result["started"]:
        context = ssl.create_default_context(cafile=str(ca))
        result["http"] = fetch("http://127.0.0.1/")[0]
        status, body = fetch("https://localhost/", context)
        result["https"], result["https_welcome"] = status, "Welcome to nginx!" in body
        workers = _children(server.pid)
        result["worker_uids"] = sorted({_uid(pid) for pid in workers})
        server.send_signal(signal.SIGHUP)
        for _ in range(75):  # up to about 15 s for the old workers to go and new ones to start
            if _children(server.pid) and not set(_children(server.pid)) & set(workers):
                break
            time.sleep(0.2)
        result["reloaded"] = bool(_children(server.pid)) and not set(_children(server.pid)) & set(workers)
        result["after_reload"] = fetch("http://127.0.0.1/")[0]
    result["stderr"] = stop(server, signal.SIGQUIT)
    return result


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry))
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return -1


def _resp(sock: socket.socket, *words: str) -> bytes:
    sock.sendall(f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words))
    time.sleep(0.05)
    return sock.recv(65536)


def probe_redis(root: str) -> dict[str, Any]:
    """SET/GET, then a persistence file written, the server restarted, and the value read back."""
    user = ids(Path(root), "redis")
    program = first_of(root, "/usr/local/bin/redis-server", "/usr/bin/redis-server")
    # Debian's configuration when it shipped; a /usr/local build runs on its compiled-in defaults
    config = (
        ["/etc/redis/redis.conf"] if (Path(root) / "etc/redis/redis.conf").is_file() else ["--dir", "/var/lib/redis", "--bind", "127.0.0.1"]
    )
    command = ["chroot", f"--userspec={user}", root, program, *config, "--daemonize", "no", "--supervised", "no", "--logfile", ""]
    result: dict[str, Any] = {}
    # the environment a container runtime gives an image that sets none (redis 8 refuses a LANG naming a
    # locale the root lacks, so the host's must not leak in)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    result["started"] = wait_port(6379, server)
    if result["started"]:
        with socket.create_connection(("127.0.0.1", 6379)) as sock:
            result["set"] = _resp(sock, "SET", "distill", "works").decode()
            result["get"] = _resp(sock, "GET", "distill").decode()
            result["save"] = _resp(sock, "SAVE").decode()
    result["dump_written"] = (Path(root) / "var/lib/redis/dump.rdb").is_file()
    result["stderr"] = stop(server)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if wait_port(6379, server):
        with socket.create_connection(("127.0.0.1", 6379)) as sock:
            result["get_after_restart"] = _resp(sock, "GET", "distill").decode()
    result["stderr"] += stop(server)
    return result


def probe_postgresql(root: str) -> dict[str, Any]:
    """initdb, the server as `postgres`, a table, time-zone and locale-dependent functions."""
    out = Path(root)
    user = ids(out, "postgres")
    bindir = next(out.glob("usr/lib/postgresql/*/bin")).relative_to(out)
    data = "/var/lib/postgresql/data"
    result: dict[str, Any] = {}
    initdb = subprocess.run(
        [
            "chroot",
            f"--userspec={user}",
            root,
            f"/{bindir}/initdb",
            "-D",
            data,
            "--locale=C.UTF-8",
            "--encoding=UTF8",
            "--auth=trust",
            "--username=postgres",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    result["initdb"] = initdb.returncode
    result["initdb_output"] = (initdb.stdout + initdb.stderr)[-2000:]
    if initdb.returncode:
        return result
    server = subprocess.Popen(
        [
            "chroot",
            f"--userspec={user}",
            root,
            f"/{bindir}/postgres",
            "-D",
            data,
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            "/run/postgresql",
        ],
        stderr=subprocess.PIPE,
        env={"LANG": "C.UTF-8", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    result["started"] = wait_port(5432, server)
    if result["started"]:
        time.sleep(0.5)
        sql = (
            "CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'été'), (2, 'hiver');"
            "SELECT string_agg(upper(name), ',' ORDER BY id) FROM t;"
            "SELECT (timestamptz '2024-01-15 12:00:00+00' AT TIME ZONE 'Asia/Tokyo')::text;"
            "SET TIME ZONE 'America/New_York'; SELECT to_char(timestamptz '2024-07-01 12:00:00+00', 'HH24:MI TZ');"
            "SELECT to_char(date '2024-03-05', 'TMMonth');"
        )
        psql = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True
        )
        result["psql"] = psql.returncode
        result["rows"] = psql.stdout.splitlines()
        result["psql_error"] = psql.stderr[-1000:]
    result["stderr"] = stop(server, signal.SIGINT)
    return result


PYTHON_PROBE = r"""
import ctypes, hashlib, json, sqlite3, ssl, urllib.request, zoneinfo, datetime
result = {}
context = ssl.create_default_context()
result["default_cas"] = context.cert_store_stats()["x509_ca"]
context.load_verify_locations("/probe/ca.pem")
with urllib.request.urlopen("https://localhost:8443/", context=context, timeout=10) as response:
    result["https"] = [response.status, response.read().decode()]
db = sqlite3.connect(":memory:")
db.execute("create table t (x text)")
db.execute("insert into t values ('distilled')")
result["sqlite"] = db.execute("select x from t").fetchone()[0]
libc = ctypes.CDLL("libc.so.6")
libc.iconv_open.restype = ctypes.c_void_p
result["iconv_utf16"] = libc.iconv_open(b"UTF-16LE", b"UTF-8") not in (None, ctypes.c_void_p(-1).value)
result["json"] = json.loads(json.dumps({"a": [1, 2]}))
tokyo = datetime.datetime(2024, 1, 15, 12, tzinfo=datetime.timezone.utc).astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
result["zoneinfo"] = tokyo.isoformat()
result["sha256"] = hashlib.sha256(b"distill").hexdigest()
print(json.dumps(result))
"""


def probe_python3(root: str, tls_dir: str) -> dict[str, Any]:
    """ssl (default CA store plus the test's CA, an HTTPS call), sqlite3, ctypes and iconv, json, zoneinfo, hashlib."""
    out = Path(root)
    ca, cert, key = make_tls(Path(tls_dir))
    (out / "probe").mkdir(exist_ok=True)
    (out / "probe/ca.pem").write_bytes(ca.read_bytes())
    (out / "probe/probe.py").write_text(PYTHON_PROBE)
    (out / "etc/hosts").write_text("127.0.0.1 localhost\n")  # what a container runtime provides
    server = tls_server(cert, key)
    try:
        python = first_of(root, "/usr/local/bin/python3", "/usr/bin/python3")
        run = subprocess.run(
            ["chroot", root, python, "/probe/probe.py"],
            capture_output=True,
            text=True,
            env={"LANG": "C.UTF-8", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    finally:
        server.shutdown()
    result = json.loads(run.stdout) if run.returncode == 0 and run.stdout.strip() else {}
    result["exit"], result["stderr"] = run.returncode, run.stderr[-2000:]
    return result


NODE_PROBE = r"""
const https = require("node:https"), crypto = require("node:crypto"), zlib = require("node:zlib");
const result = {};
result.sha256 = crypto.createHash("sha256").update("distill").digest("hex");
result.gzip = zlib.gunzipSync(zlib.gzipSync("distilled")).toString();
result.tokyo = new Intl.DateTimeFormat("en-US", {timeZone: "Asia/Tokyo", hour: "numeric", hourCycle: "h23"})
  .format(new Date(Date.UTC(2024, 0, 15, 12)));
https.get("https://localhost:8443/", (response) => {
  let body = "";
  response.on("data", (chunk) => body += chunk);
  response.on("end", () => { result.https = [response.statusCode, body]; console.log(JSON.stringify(result)); });
}).on("error", (error) => { result.https = String(error); console.log(JSON.stringify(result)); });
"""


def probe_node(root: str, tls_dir: str) -> dict[str, Any]:
    """crypto, zlib, Intl with a time zone (ICU), and HTTPS to a local server trusting the test CA."""
    out = Path(root)
    ca, cert, key = make_tls(Path(tls_dir))
    (out / "probe").mkdir(exist_ok=True)
    (out / "probe/ca.pem").write_bytes(ca.read_bytes())
    (out / "probe/probe.js").write_text(NODE_PROBE)
    (out / "etc/hosts").write_text("127.0.0.1 localhost\n")
    server = tls_server(cert, key)
    try:
        node = first_of(root, "/usr/local/bin/node", "/usr/bin/node")
        run = subprocess.run(
            ["chroot", root, node, "/probe/probe.js"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NODE_EXTRA_CA_CERTS": "/probe/ca.pem"},
        )
    finally:
        server.shutdown()
    result = json.loads(run.stdout) if run.returncode == 0 and run.stdout.strip() else {}
    result["exit"], result["stderr"] = run.returncode, run.stderr[-2000:]
    return result


def probe_sshd(root: str, key_dir: str) -> dict[str, Any]:
    """Public-key authentication to the distilled sshd with the host's ssh client: OpenSSH >= 9.8 hands the
    connection to helpers it execs (sshd-session, sshd-auth), so a listener alone accepts and drops it."""
    out, keys = Path(root), Path(key_dir)
    keys.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True)
    (out / "probe").mkdir(exist_ok=True)
    (out / "probe/authorized_keys").write_bytes((keys / "id.pub").read_bytes())
    server = subprocess.Popen(
        [
            "chroot",
            root,
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-p",
            "2222",
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "AuthorizedKeysFile=/probe/authorized_keys",
            "-o",
            "StrictModes=no",
            "-o",
            "UsePAM=no",
            "-o",
            "PidFile=none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    result: dict[str, Any] = {"started": wait_port(2222, server)}
    if result["started"]:
        client = subprocess.run(
            [
                "ssh",
                "-v",
                "-i",
                str(keys / "id"),
                "-p",
                "2222",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "root@127.0.0.1",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        result["authenticated"] = "Authenticated to 127.0.0.1" in client.stderr
        result["client"] = client.stderr[-1500:]
    result["stderr"] = stop(server)
    return result


PERL_PROBE = r"""
use strict; use warnings; use POSIX qw(strftime); use Digest::SHA qw(sha256_hex); use Encode qw(encode);
use List::Util qw(sum); use Storable qw(freeze thaw); use Time::HiRes qw(time); use JSON::PP;
my $data = thaw(freeze({n => [1, 2, 3]}));
print join("|", sha256_hex("distill"), length(encode("UTF-16LE", "\x{e9}t\x{e9}")), sum(@{$data->{n}}),
           strftime("%Y", gmtime(0)), JSON::PP->new->canonical->encode({b => [1], a => "x"}), $^V), "\n";
"""


def probe_perl(root: str) -> dict[str, Any]:
    """Core modules, pure-Perl and XS (POSIX, Digest::SHA, Encode, List::Util, Storable, Time::HiRes, JSON::PP)."""
    (Path(root) / "probe").mkdir(exist_ok=True)
    (Path(root) / "probe/probe.pl").write_text(PERL_PROBE)
    perl = first_of(root, "/usr/local/bin/perl", "/usr/bin/perl")
    run = subprocess.run(
        ["chroot", root, perl, "/probe/probe.pl"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return {"exit": run.returncode, "stdout": run.stdout.strip(), "stderr": run.stderr[-2000:]}


RUBY_PROBE = r"""
require "json"; require "digest"; require "set"; require "zlib"; require "stringio"
gz = StringIO.new; w = Zlib::GzipWriter.new(gz); w.write("distilled"); w.close
puts [Digest::SHA256.hexdigest("distill"), JSON.generate({"b" => [1], "a" => "x"}), Set[3, 1, 3].size,
      Zlib::GzipReader.new(StringIO.new(gz.string)).read, Time.at(0).utc.year, Gem.loaded_specs.key?("json"),
      RUBY_VERSION].join("|")
"""


def probe_ruby(root: str) -> dict[str, Any]:
    """The standard library, pure-Ruby and C extensions (json, digest, set, zlib), and rubygems' default gems."""
    (Path(root) / "probe").mkdir(exist_ok=True)
    (Path(root) / "probe/probe.rb").write_text(RUBY_PROBE)
    ruby = first_of(root, "/usr/local/bin/ruby", "/usr/bin/ruby")
    run = subprocess.run(
        ["chroot", root, ruby, "/probe/probe.rb"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return {"exit": run.returncode, "stdout": run.stdout.strip(), "stderr": run.stderr[-2000:]}


def probe_curl(root: str, server_root: str, tls_dir: str) -> dict[str, Any]:
    """HTTPS and HTTP/2 to a local nginx, `app.test` resolved through /etc/hosts."""
    out, srv = Path(root), Path(server_root)
    for log in (srv / "var/log/nginx").iterdir():  # hard-linked to the cached rootfs: nginx must not append to them
        log.unlink()
    ca, cert, key = make_tls(Path(tls_dir))
    (srv / "srv-tls").mkdir(exist_ok=True)
    for source in (cert, key):
        (srv / "srv-tls" / source.name).write_bytes(source.read_bytes())
    (srv / "srv-tls/nginx.conf").write_text(
        "events {} pid /srv-tls/nginx.pid; error_log /srv-tls/error.log;\n"
        "http { access_log off; server { listen 127.0.0.1:8443 ssl http2; ssl_certificate /srv-tls/server.pem;\n"
        "  ssl_certificate_key /srv-tls/server.key; location / { return 200 'hello over h2\\n'; } } }\n"
    )
    server = subprocess.Popen(
        ["chroot", str(srv), "/usr/sbin/nginx", "-c", "/srv-tls/nginx.conf", "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    (out / "etc/hosts").write_text("127.0.0.1 app.test\n")  # what a container runtime provides
    (out / "probe").mkdir(exist_ok=True)
    (out / "probe/ca.pem").write_bytes(ca.read_bytes())
    result: dict[str, Any] = {"started": wait_port(8443, server)}
    if result["started"]:
        run = subprocess.run(
            [
                "chroot",
                root,
                "/usr/bin/curl",
                "-sS",
                "--http2",
                "--cacert",
                "/probe/ca.pem",
                "-o",
                "/probe/body",
                "-w",
                "%{http_version} %{http_code}",
                "https://app.test:8443/",
            ],
            capture_output=True,
            text=True,
        )
        result["curl"] = [run.returncode, run.stdout, run.stderr[-500:]]
        result["body"] = (out / "probe/body").read_text() if (out / "probe/body").exists() else None
        default_store = subprocess.run(
            ["chroot", root, "/usr/bin/curl", "-sS", "https://app.test:8443/", "-o", "/probe/body2"], capture_output=True, text=True
        )
        result["untrusted_refused"] = default_store.returncode == 60  # the test CA is not in the system bundle
    result["stderr"] = stop(server, signal.SIGQUIT)
    return result


def probe_openssl(root: str, tls_dir: str) -> dict[str, Any]:
    """The CLI: its providers (the legacy one included), a digest, and s_client to a local server."""
    out = Path(root)
    ca, cert, key = make_tls(Path(tls_dir))
    (out / "probe").mkdir(exist_ok=True)
    (out / "probe/ca.pem").write_bytes(ca.read_bytes())
    (out / "probe/data").write_bytes(b"distill\n")

    def openssl(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", root, "/usr/bin/openssl", *args], input=stdin, capture_output=True, text=True)

    result: dict[str, Any] = {}
    listed = openssl("list", "-providers", "-provider", "default", "-provider", "legacy")
    result["providers"] = [listed.returncode, listed.stdout]
    result["sha256"] = openssl("dgst", "-sha256", "/probe/data").stdout.strip()
    md4 = openssl("dgst", "-md4", "-provider", "legacy", "-provider", "default", "/probe/data")
    result["md4"] = [md4.returncode, md4.stdout.strip(), md4.stderr[-300:]]
    server = tls_server(cert, key)
    try:
        client = openssl("s_client", "-connect", "127.0.0.1:8443", "-CAfile", "/probe/ca.pem", "-verify_return_error", "-brief", stdin="")
    finally:
        server.shutdown()
    result["s_client"] = [client.returncode, client.stderr[-800:]]
    return result


def probe_platform(root: str, qemu: str) -> dict[str, Any]:
    """jq and nginx of one platform's output, under qemu-user-static when `qemu` is not "-".

    Everything runs chrooted into ROOT (with the static qemu copied in), so every path a program
    opens or creates (loader, libraries, logs, pid file) is the output's, never the host's. jq also
    runs as `qemu-ARCH-static -L ROOT ROOT/usr/bin/jq` (`jq_L`), the way one tries a foreign root by
    hand; that form cannot follow an absolute symlink to the loader (ppc64el's /lib64/ld64.so.2).
    """
    out = Path(root)
    # nginx's postinst, which an unpacked root never ran, would have enabled the default site
    (out / "etc/nginx/sites-enabled/probe").write_text("server { listen 80; root /usr/share/nginx/html; }\n")
    prefix: list[str] = []
    document = '{"a": [1, "two", {"three": 3}]}'
    result: dict[str, Any] = {}
    if qemu != "-":
        host_qemu = subprocess.run(["which", qemu], capture_output=True, text=True, check=True).stdout.strip()
        (out / ".qemu").write_bytes(Path(host_qemu).read_bytes())
        (out / ".qemu").chmod(0o755)
        prefix = ["/.qemu"]
        ran = subprocess.run(
            [host_qemu, "-L", root, f"{root}/usr/bin/jq", "-c", ".a"], input=document, capture_output=True, text=True, timeout=120
        )
        result["jq_L"] = [ran.returncode, ran.stdout.strip(), ran.stderr[-500:]]
    ran = subprocess.run(["chroot", root, *prefix, "/usr/bin/jq", "-c", ".a"], input=document, capture_output=True, text=True, timeout=120)
    result["jq"] = [ran.returncode, ran.stdout.strip(), ran.stderr[-500:]]
    tested = subprocess.run(["chroot", root, *prefix, "/usr/sbin/nginx", "-t"], capture_output=True, text=True, timeout=120)
    result["nginx_t"] = [tested.returncode, tested.stderr[-800:]]
    server = subprocess.Popen(["chroot", root, *prefix, "/usr/sbin/nginx", "-g", "daemon off;"], stderr=subprocess.PIPE)
    result["started"] = wait_port(80, server, timeout=60)
    if result["started"]:
        status, body = fetch("http://127.0.0.1/")
        result["http"], result["welcome"] = status, "Welcome to nginx!" in body
    result["stderr"] = stop(server, signal.SIGQUIT)
    return result


def probe_squid(root: str) -> dict[str, Any]:
    """squid as a forward proxy: a request to a closed port answers with squid's error page, from its
    templates (which live behind the `errors -> ../squid-langpack` directory link), in the language asked for."""
    out = Path(root)
    (out / "etc/squid/conf.d").mkdir(exist_ok=True)
    (out / "etc/squid/conf.d/probe.conf").write_text("shutdown_lifetime 0 seconds\nvisible_hostname probe\n")
    server = subprocess.Popen(
        ["chroot", root, "/usr/sbin/squid", "-N", "-f", "/etc/squid/squid.conf"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    result: dict[str, Any] = {"started": wait_port(3128, server)}
    if result["started"]:
        with socket.create_connection(("127.0.0.1", 3128), timeout=30) as sock:
            sock.sendall(b"GET http://127.0.0.1:1999/ HTTP/1.1\r\nHost: 127.0.0.1:1999\r\nAccept-Language: de\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        result["status"] = head.split("\r\n", 1)[0]
        result["error"] = next((line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("X-Squid-Error:")), None)
        result["missing_template"] = "Missing Template" in body
        result["german"] = "FEHLER" in body
    result["stderr"] = stop(server, signal.SIGINT)
    return result


def probe_command(root: str, spec: str) -> dict[str, Any]:
    """One command in the root: spec is JSON {argv, env, user}; exit code, stdout and stderr come back."""
    command = json.loads(spec)
    user = [f"--userspec={ids(Path(root), command['user'])}"] if command.get("user") else []
    run = subprocess.run(
        ["chroot", *user, root, *command["argv"]],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **command.get("env", {})},
    )
    return {"exit": run.returncode, "stdout": run.stdout[-3000:], "stderr": run.stderr[-3000:]}


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    runtime_mounts(sys.argv[2])
    probe = globals()[f"probe_{sys.argv[1]}"]
    print(json.dumps(probe(*sys.argv[2:])))

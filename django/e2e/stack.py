"""The stack the browser test runs against: the demo site under gunicorn
and olive (HTTPS; RabbitMQ or the embedded broker) on free loopback ports, in a temporary
directory, each with its own exchange so that concurrent tests cannot
cross. Everything real; stopped by `close()`."""

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "demo"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30.0, insecure=False):
    ctx = ssl._create_unverified_context() if insecure else None
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout}s")
            time.sleep(0.1)


OLIVE_CONFIG = """
[server]
log_format = "pretty"
log_level = "info"
access_log = false
drain_timeout = "2s"

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:{https}"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:{admin}"

[[certificate]]
cert = "cert.pem"
key = "key.pem"
self_signed_if_missing = true

[[upstream]]
name = "django"
addresses = ["127.0.0.1:{django}"]

[[route]]
path = "/static/"
static.root = "{data}/static"

[[route]]
path = "/media/"
static.root = "{data}/media"

[[route]]
path = "/olive"
live.recovery_url = "http://127.0.0.1:{django}/_olive/recover/"

[[route]]
path = "/"
proxy.upstream = "django"

{broker}

[[auth.key]]
kid = "demo"
algorithm = "HS256"
secret_env = "OLIVE_TOKEN_SECRET"
"""


AMQP_BROKER = """
[live]
broker = "amqp"

[live.amqp]
url_env = "OLIVE_AMQP_URL"
exchange = "{exchange}"
queue_prefix = "{exchange}.node"
"""


class Stack:
    """`broker`: "amqp" (RabbitMQ; Django publishes over AMQP) or "memory"
    (olive's embedded broker; Django publishes with olive's HTTP API)."""

    def __init__(self, olive_bin, broker="amqp"):
        self.olive_bin = olive_bin
        self.dir = Path(tempfile.mkdtemp(prefix="olive-e2e-"))
        self.ports = {"django": free_port(), "https": free_port(), "admin": free_port()}
        self.exchange = "olive-e2e-" + secrets.token_hex(4)
        self.env = dict(
            os.environ,
            OLIVE_DEMO_DATA=str(self.dir),
            OLIVE_TOKEN_SECRET=secrets.token_hex(32),
            OLIVE_PUBLISHER=broker if broker == "amqp" else "http",
            OLIVE_PUBLISH_URL=f"http://127.0.0.1:{self.ports['admin']}/olive/publish",
            OLIVE_AMQP_URL=AMQP_URL,
            OLIVE_EXCHANGE=self.exchange,
        )
        self.broker = broker
        self.url = f"https://localhost:{self.ports['https']}"
        self.procs = {}
        amqp = AMQP_BROKER.format(exchange=self.exchange) if broker == "amqp" else ""
        config = OLIVE_CONFIG.format(data=self.dir, broker=amqp, **self.ports)
        (self.dir / "olive.toml").write_text(config)

    def manage(self, *args):
        return subprocess.run(
            [sys.executable, str(DEMO / "manage.py"), *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def start(self):
        self.manage("migrate", "-v0")
        self.manage("collectstatic", "--noinput", "-v0")
        self.manage("demo_setup")
        log = open(self.dir / "gunicorn.log", "w")
        self.procs["django"] = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--chdir", str(DEMO), "--workers", "3", "--no-control-socket",
             "--bind", f"127.0.0.1:{self.ports['django']}", "demo_site.wsgi"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{self.ports['django']}/")
        self.start_olive()

    def start_olive(self):
        log = open(self.dir / "olive.log", "a")
        self.procs["olive"] = subprocess.Popen(
            [self.olive_bin, "serve", "--config", str(self.dir / "olive.toml")],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/", insecure=True)
        wait_http(f"http://127.0.0.1:{self.ports['admin']}/readyz")

    def stop_olive(self):
        proc = self.procs.pop("olive")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)

    def close(self):
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.broker != "amqp":
            return
        try:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            channel = connection.channel()
            channel.exchange_delete(self.exchange)
            channel.exchange_delete(self.exchange + ".presence")
            connection.close()
        except Exception as e:  # leaving an empty exchange behind is harmless
            print(f"could not delete exchange {self.exchange}: {e!r}", file=sys.stderr)

    def logs(self):
        return {name: (self.dir / f"{name}.log").read_text(errors="replace")[-3000:] for name in ("olive", "gunicorn")}

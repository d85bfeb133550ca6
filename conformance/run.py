"""Runs real AMQP client libraries' own integration tests, unmodified, against
the gateway and against RabbitMQ 3.10, and prints a table.

Each suite is fetched pinned at run time (a PyPI source package, cached under
~/.cache/amqp-gw/suites) and never copied into this repository. Tests that
need what only RabbitMQ's host has are listed as not applicable, with the
reason; tests that pass on RabbitMQ and fail on the gateway are listed one by
one, either as a known deviation (docs/mapping.md, with the reason) or as a
regression, which makes the exit status 1.

  python conformance/run.py                       # every suite, both targets
  python conformance/run.py --fast --targets gateway   # CI's stable subset

pika's acceptance tests and aio-pika's tests exist only in their source
repositories: point PIKA_SOURCE / AIO_PIKA_SOURCE at snapshots (e.g. brought
with the workplace's `fetch`). They
connect to 127.0.0.1:5672 (hard-coded), so the runner forwards that port to
each target in turn; it must be free (run the gateway on another port, e.g.
AMQP_PORT=5674 deploy/up.sh, and pass --gateway-port 5674).

RabbitMQ's own broker tests (the functional tests of its Java client) need
JAVA_CLIENT_SOURCE: `git archive v5.0.0 src/test` of rabbitmq-java-client,
unpacked; conformance/java builds them with javac against Debian's jars.
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import threading
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

CACHE = Path(os.environ.get("AMQP_GW_SUITES", Path.home() / ".cache/amqp-gw/suites"))
PYTEST = ["pytest==8.3.5", "pytest-rerunfailures==15.0"]  # the suites mark flaky tests for reruns


def excluded(path):
    """A list of `Class[.method] reason` lines (conformance/java/excluded.txt) as rules."""
    rules = []
    for line in (Path(__file__).parent / path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test, why = line.split(None, 1)
            rules.append((rf"^{re.escape(test)}(\.|\[|$)", why))
    return rules


SUITES = {
    "py-amqp": {
        "package": "amqp==5.3.1",
        "tests": ["t/integration/test_rmq.py"],
        "fast": True,
        # Its TLS tests read t/certs, which the sdist leaves out: ours go
        # there under its names (proxy/tests/certs; "broken" = a key that
        # is not the certificate's).
        "certs": {"t/certs/ca_certificate.pem": "ca.pem",
                  "t/certs/client_certificate.pem": "client.pem",
                  "t/certs/client_key.pem": "client.key",
                  "t/certs/client_certificate_broken.pem": "client.pem",
                  "t/certs/client_key_broken.pem": "stranger.key"},
        # Two connect to tls-v1-2.badssl.com: not run (no internet here).
        "deselect": "not test_tls_default_certs and not test_tls_no_default_certs_fails",
        "not_applicable": [
            (r"tls", "needs a TLS listener on every target (--gateway-tls-port, "
                     "--rabbitmq-tls-port)", "without_tls"),
        ],
        "known": [],
    },
    "pika blocking adapter (tests/acceptance/blocking_adapter_test.py)": {
        "source_env": "PIKA_SOURCE",
        "tests": ["tests/acceptance/blocking_adapter_test.py"],
        "forward_5672": True,
        "fast": False,
        "not_applicable": [],
        "known": [],
    },
    "pika async adapters (tests/acceptance/async_adapter_tests.py)": {
        # The same scenarios on each of pika's I/O loops (select, asyncio...).
        "source_env": "PIKA_SOURCE",
        "tests": ["tests/acceptance/async_adapter_tests.py"],
        "forward_5672": True,
        "fast": False,
        "not_applicable": [],
        "known": [],
    },
    "aio-pika (tests that need a broker)": {
        "source_env": "AIO_PIKA_SOURCE",
        # Its own virtualenv: its pytest plugins (aiomisc) must not meet the
        # other suites'. The snapshot itself is installed into it.
        "venv": "venv-aio-pika",
        "requires": ["aiormq>=6.8,<7", "yarl", "aiomisc>=18.0", "aiomisc-pytest", "pytest",
                     "shortuuid", "timeout-decorator"],
        "install_source": True,
        # Their conftest starts RabbitMQ in Docker; this plugin hands it the target instead.
        "plugin": "aio_pika_target",
        "tests": ["tests/test_amqp.py", "tests/test_connect.py", "tests/test_rpc.py",
                  "tests/test_master.py", "tests/test_message.py", "tests/test_types.py"],
        "fast": False,
        "not_applicable": [],
        "known": [],
    },
    "lapin (tests that need a broker)": {
        # The lapin this workspace pins (Cargo.lock), from cargo's registry:
        # its integration tests, each test binary run with AMQP_ADDR set.
        "cargo": "lapin",
        "tests": [],
        "fast": False,
        "not_applicable": [
            (r"conn_refused::", "expects nothing listening on localhost:5673, where this "
                                "machine's reference RabbitMQ runs"),
        ],
        "known": [],
    },
    "kombu (py-amqp transport)": {
        "package": "kombu==5.5.4",
        "tests": ["t/integration/test_py_amqp.py"],
        "fast": False,
        "not_applicable": [],
        "known": [
            (r"test_PyAMQPPriority::test_publish_requeue_consume",
             "timing-dependent on both targets: it consumes for one drain_events(timeout=1) "
             "after a requeue; run alone on 2026-12-07 it failed 3 of 3 on RabbitMQ 3.10 "
             "too (5 reruns each), and passed there in some full runs"),
        ],
    },
    "java functional (rabbitmq-java-client 5.0.0)": {
        # RabbitMQ's broker tests from its Java client's repository, on Debian's
        # amqp-client 5.0.0 and JUnit 4; excluded.txt: those that drive the host.
        "source_env": "JAVA_CLIENT_SOURCE",
        "java": "conformance/java",
        "tests": [],
        "fast": False,
        "not_applicable": excluded("java/excluded.txt"),
        "known": [
            (r"QueueSizeLimit\.queueSizeDlx",
             "drop-head dead-letters as the gateway reads the full queue, a moment after "
             "the publishes: a get on the dead-letter queue right after them may come first "
             "(docs/mapping.md)"),
            (r"ConsumerPriorities\.consumerPriorities",
             "messages published just before a basic.cancel on the same channel: RabbitMQ "
             "has delivered them at enqueue; the gateway stores them in RocketMQ first, "
             "so the next consumer may get them (docs/mapping.md)"),
            (r"ConnectionRecovery\.declarationOfMany",
             "5,000 declare/delete rounds in 60 s: each queue is a RocketMQ topic created "
             "and deleted (docs/mapping.md)"),
        ],
    },
    "Celery application (conformance/celery_app)": {
        # Our own small application, not a foreign suite: two workers and a
        # client over kombu / py-amqp (results, acks_late, retry, broadcast).
        "local": "celery_app",
        "requires": ["celery==5.5.3"],
        "tests": ["test_celery_app.py"],
        "fast": True,
        "not_applicable": [],
        "known": [],
    },
}


def fetch(python, package):
    """Downloads and unpacks the pinned source package; returns its directory."""
    name, version = package.split("==")
    CACHE.mkdir(parents=True, exist_ok=True)
    for d in CACHE.iterdir():
        if d.is_dir() and d.name.lower() == f"{name}-{version}".lower():
            return d
    subprocess.run([python, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                    "--no-deps", "-d", str(CACHE), package], check=True)
    archive = next(p for p in CACHE.iterdir()
                   if p.name.lower().startswith(f"{name}-{version}".lower())
                   and p.name.endswith(".tar.gz"))
    with tarfile.open(archive) as t:
        try:
            t.extractall(CACHE, filter="data")
        except TypeError:  # Python before 3.11.4 has no extraction filters
            t.extractall(CACHE)
    return fetch(python, package)


class Forward:
    """127.0.0.1:5672 -> 127.0.0.1:<port>, for suites that only know 5672."""

    def __init__(self, port):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 5672))
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def suite_python(python, spec, source):
    """The interpreter a suite runs with: the runner's, or its own venv."""
    if "venv" not in spec:
        return python
    venv = CACHE.parent / spec["venv"]
    if not (venv / "bin/python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    own = str(venv / "bin/python")
    subprocess.run([own, "-m", "pip", "install", "-q", *spec.get("requires", [])], check=True)
    if spec.get("install_source"):
        subprocess.run([own, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                        str(source)], check=True)
    return own


def cargo_source(crate):
    """A copy of the registry source of `crate` as this workspace's Cargo.lock pins it."""
    root = Path(__file__).resolve().parent.parent
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=root,
        capture_output=True, check=True, text=True).stdout)
    package = next(p for p in meta["packages"] if p["name"] == crate and p["source"])
    copy = CACHE / f"{crate}-{package['version']}"
    if not copy.is_dir():
        shutil.copytree(Path(package["manifest_path"]).parent, copy)
        # The workspace's lock file pins its dependencies too.
        shutil.copy(root / "Cargo.lock", copy / "Cargo.lock")
    return copy


def run_cargo_suite(source, port, out_dir, target):
    """Each integration test binary of a crate, against AMQP_ADDR; libtest's
    --logfile says which passed."""
    env = dict(os.environ, AMQP_ADDR=f"amqp://guest:guest@127.0.0.1:{port}/%2f",
               CARGO_TARGET_DIR=str(CACHE.parent / "suite-target"), RUST_LOG="error")
    results = {}
    for test_file in sorted((Path(source) / "tests").glob("*.rs")):
        name = test_file.stem
        log = out_dir / f"cargo-{Path(source).name}-{name}-{target}.log"
        log.unlink(missing_ok=True)
        run = subprocess.run(["cargo", "test", "--test", name, "--", "--test-threads", "1",
                              "--logfile", str(log)], cwd=source, env=env,
                             capture_output=True, text=True, timeout=1800)
        if not log.exists():  # did not build, or needs a feature: nothing ran
            continue
        for line in log.read_text().splitlines():
            outcome, _, test = line.partition(" ")
            failure = ""
            if outcome == "failed":
                match = re.search(rf"---- {re.escape(test)} stdout ----\n(?:.*\n)?(.*)",
                                  run.stdout)
                failure = match.group(1)[:160] if match else "failed"
            results[f"{name}::{test}"] = (
                {"ok": "passed", "failed": "failed"}.get(outcome, "skipped"), failure)
    return results


def run_java_suite(source, port, out_dir, target):
    """conformance/java: build.sh compiles the snapshot's tests (once), run.sh
    prints `PASS|FAIL|SKIP Class.method reason` per test."""
    java = Path(__file__).parent / "java"
    env = dict(os.environ, JAVA_SUITE_BUILD=str(CACHE.parent / "java-suite"))
    subprocess.run([str(java / "build.sh"), str(source)], env=env, check=True)
    with open(out_dir / f"java-functional-{target}.log", "w") as log:
        run = subprocess.run([str(java / "run.sh"), "127.0.0.1", str(port)], env=env,
                             stdout=subprocess.PIPE, stderr=log, text=True, timeout=3600)
    outcomes = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}
    return {test: (outcomes[outcome], message[:160]) for outcome, test, message
            in re.findall(r"^(PASS|FAIL|SKIP) (\S+) ?(.*)$", run.stdout, re.M)}


def run_suite(python, suite, source, target, port, tls_port, fast, out_dir):
    """Runs one suite against one target; returns {test: (outcome, message)}."""
    spec = SUITES[suite]
    if "cargo" in spec:
        return run_cargo_suite(source, port, out_dir, target)
    if "java" in spec:
        return run_java_suite(source, port, out_dir, target)
    report = out_dir / f"{re.sub(r'[^a-z0-9]+', '-', suite.lower())}-{target}.xml"
    env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_5672_TCP=str(port))
    certs = Path(__file__).resolve().parent.parent / "proxy/tests/certs"
    for name, ours in spec.get("certs", {}).items():
        (Path(source) / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(certs / ours, Path(source) / name)
    if tls_port:
        # The certificate names localhost, not 127.0.0.1.
        env.update(RABBITMQ_HOST="localhost", RABBITMQ_5671_TCP=str(tls_port))
    args = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            f"--junitxml={report}", *spec["tests"]]
    if "plugin" in spec:
        env["PYTHONPATH"] = str(Path(__file__).parent / "plugins")
        args += ["-p", spec["plugin"]]
    if spec.get("deselect"):
        args += ["-k", spec["deselect"] + ("" if tls_port or not fast else " and not tls")]
    elif fast and not tls_port:
        args += ["-k", "not tls"]
    if SUITES[suite].get("forward_5672"):
        with Forward(port):
            subprocess.run(args, cwd=source, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=1800)
    else:
        subprocess.run(args, cwd=source, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=1800)
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or el.text or "").strip().splitlines()[0:1]
                message = message[0][:160] if message else ""
        results[test] = (outcome, message)
    return results


def first_match(rules, test):
    return next((why for pattern, why in rules if re.search(pattern, test)), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", 5672)))
    ap.add_argument("--rabbitmq-port", type=int, default=int(os.environ.get("RABBITMQ_PORT", 5673)))
    ap.add_argument("--gateway-tls-port", type=int,
                    default=int(os.environ.get("GATEWAY_TLS_PORT", 0)),
                    help="the gateway's amqps port (deploy/up.sh AMQPS_PORT)")
    ap.add_argument("--rabbitmq-tls-port", type=int,
                    default=int(os.environ.get("RABBITMQ_TLS_PORT", 0)),
                    help="RabbitMQ's amqps port (deploy/rabbitmq/start.sh RABBIT_TLS_PORT)")
    ap.add_argument("--targets", default="rabbitmq,gateway")
    ap.add_argument("--fast", action="store_true", help="only the suites marked fast (CI)")
    ap.add_argument("--only", default="", help="only the suites whose name contains this")
    ap.add_argument("--out", default=str(CACHE / "reports"))
    args = ap.parse_args()
    python = sys.executable
    chosen = {name: spec for name, spec in SUITES.items()
              if (spec["fast"] or not args.fast) and args.only.lower() in name.lower()}
    subprocess.run([python, "-m", "pip", "install", "-q", *PYTEST,
                    *[s["package"] for s in chosen.values() if "package" in s],
                    *[r for s in chosen.values() if "venv" not in s
                      for r in s.get("requires", [])]], check=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [t.strip() for t in args.targets.split(",")]
    ports = {"gateway": args.gateway_port, "rabbitmq": args.rabbitmq_port}
    tls_ports = {"gateway": args.gateway_tls_port, "rabbitmq": args.rabbitmq_tls_port}
    with_tls = all(tls_ports[t] for t in targets)

    rows, regressions, details = [], 0, []
    not_run = []
    for suite, spec in chosen.items():
        if "source_env" in spec:
            source = os.environ.get(spec["source_env"])
            if not source or not Path(source).is_dir():
                not_run.append(f"- {suite}: not run: set {spec['source_env']} to a source snapshot")
                continue
            if spec.get("forward_5672") and not port_free(5672):
                not_run.append(f"- {suite}: not run: 127.0.0.1:5672 is in use, and its tests "
                               "connect there (move the gateway to another port)")
                continue
        elif "local" in spec:
            source = Path(__file__).parent / spec["local"]
        elif "cargo" in spec:
            source = cargo_source(spec["cargo"])
        else:
            source = fetch(python, spec["package"])
        runner = suite_python(python, spec, source)
        results = {t: run_suite(runner, suite, source, t, ports[t],
                                tls_ports[t] if with_tls else 0, args.fast, out_dir)
                   for t in targets}
        tests = sorted(set().union(*[r.keys() for r in results.values()]))
        rules = [rule[:2] for rule in spec["not_applicable"]
                 if not (with_tls and rule[2:] == ("without_tls",))]
        na = {t: first_match(rules, t) for t in tests}
        counted = [t for t in tests if not na[t]]
        passed = {tg: sum(results[tg].get(t, ("missing",))[0] == "passed" for t in counted)
                  for tg in targets}
        pinned = (spec.get("package") or " ".join(spec.get("requires", []))
                  or (f"{Path(source).name} (Cargo.lock)" if "cargo" in spec else "")
                  or f"snapshot {Path(source).name}")
        rows.append((suite, pinned, len(tests), len(tests) - len(counted), passed))
        # Only a run that includes the gateway compares against it.
        for t in counted if "gateway" in results else []:
            on_gateway = results["gateway"].get(t, ("missing", ""))
            reference = results["rabbitmq"][t][0] if "rabbitmq" in results else "passed"
            if reference == "passed" and on_gateway[0] != "passed":
                known = first_match(spec["known"], t)
                if known:
                    details.append(f"- {suite}: `{t}`: known deviation: {known}")
                else:
                    regressions += 1
                    details.append(f"- {suite}: `{t}`: **fails on the gateway**: {on_gateway[1]}")
        for t in tests:
            if na[t]:
                details.append(f"- {suite}: `{t}`: not applicable: {na[t]}")

    head = "| suite | pinned | tests | not applicable | " + " | ".join(
        f"passed on {t}" for t in targets) + " |"
    print(head)
    print("|" + "---|" * (4 + len(targets)))
    for suite, package, n, na_count, passed in rows:
        print(f"| {suite} | {package} | {n} | {na_count} | "
              + " | ".join(str(passed[t]) for t in targets) + " |")
    print()
    print("\n".join(not_run + details) if not_run or details
          else "(every applicable test passed everywhere)")
    print(f"\n{regressions} unexplained failure(s) on the gateway")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())

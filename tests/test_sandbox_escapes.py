"""Regression tests for issue #12: every host escape and verdict forgery found by red-teaming the sandbox.

Each test runs the hostile program through the public interface (``build_program`` + ``run_many``) and
then checks, from the host, that the effect did not happen: the file is absent, the kernel setting is
unchanged, the listener got no bytes, the other programs' verdicts are intact. Escapes run in every
isolating mode this machine offers (``bubblewrap``, ``namespaces``) where the mode claims to stop them
(see docs/scoring.md); the last test repeats the key ones with codepeft running as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from codepeft.sandbox import Limits, Program, build_program, run_many
from codepeft.sandbox.isolation import HIDE_ENV, _runtime_paths, bubblewrap_available, namespaces_available

MARK = f"cp-escape-{uuid.uuid4().hex[:10]}"
LIMITS = Limits(cpu_seconds=8, memory_bytes=1 << 30, processes=16, open_files=64, output_bytes=16384)
ADD = {"kind": "humaneval", "prompt": 'def add(a, b):\n    """Sum."""\n',
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
       "entry_point": "add"}
RIGHT, WRONG = "    return a + b\n", "    return a - b\n"
MODES = [pytest.param("bubblewrap", marks=pytest.mark.skipif(not bubblewrap_available(), reason="bwrap not installed")),
         pytest.param("namespaces", marks=pytest.mark.skipif(not namespaces_available(), reason="no user namespaces"))]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="checks the root case (as CI runs): run the suite as root")


def _hostile(body: str, completion: str = WRONG) -> Program:
    """A wrong ``add`` whose module-level code is ``body``: a correct verdict is "not passed"."""
    return build_program(completion + "\n\n" + textwrap.dedent(body).replace("MARK", MARK), ADD)


def _run(programs: list[Program], mode: str, workers: int = 2, timeout: float = 8.0):
    return run_many(programs, workers=workers, timeout=timeout, limits=LIMITS, mode=mode)


PROBER = """
    import os, time
    rewritten = 0
    deadline = time.time() + 3
    while time.time() < deadline:
        for top in ("/dev/shm", "/tmp", "/var/tmp", "/run", "/"):
            for root, dirs, files in os.walk(top):
                if root.count("/") > 6 or root.startswith(("/proc", "/sys", "/usr")):
                    dirs[:] = []
                    continue
                for name in files:
                    if name in ("main.py", "solution.py"):
                        path = os.path.join(root, name)
                        try:
                            text = open(path).read()
                            open(path, "w").write(text.replace("return a - b", "return a + b"))
                            rewritten += 1
                        except OSError:
                            pass
    print("rewritten", rewritten)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_program_cannot_rewrite_other_programs_files(mode):
    """Escape 1: a prober rewrote concurrently running programs' main.py under the host's /dev/shm."""
    wrong = [_hostile("x = 1\n") for _ in range(8)]
    outcomes = _run([_hostile(PROBER), *wrong, _hostile("x = 1\n", RIGHT)], mode, workers=3)
    report = [(o.status, o.reason) for o in outcomes]
    assert all(o.status == "failed" and o.reason == "AssertionError" for o in outcomes[1:9]), report
    assert outcomes[9].passed, report
    assert not outcomes[0].passed, report


FILES_LEFT = """
    import os
    for directory in ("/dev/shm", "/tmp", "/var/tmp", "/dev", os.getcwd(), os.environ.get("HOME", "/")):
        try:
            with open(os.path.join(directory, "MARK"), "wb") as handle:
                for _ in range(192):  # 192 MiB if nothing stops it
                    handle.write(b"x" * (1 << 20))
        except OSError as err:
            print(directory, type(err).__name__)
"""


@pytest.mark.parametrize("mode", MODES)
def test_nothing_is_left_on_the_host(mode):
    """Escape 2: writes to /dev/shm and /dev stayed after scoring (192 MiB in the host's /dev/shm)."""
    outcome = _run([_hostile(FILES_LEFT)], mode, timeout=20)[0]
    assert not outcome.passed
    for directory in ("/dev/shm", "/tmp", "/var/tmp", "/dev"):
        assert not (Path(directory) / MARK).exists(), f"{directory}/{MARK} left on the host ({outcome})"


KERNEL = """
    import ctypes, os
    name = b"MARK"
    ctypes.CDLL(None).setdomainname(name, len(name))
    for path in ("/proc/sys/kernel/domainname", "/proc/sys/kernel/hostname"):
        try:
            open(path, "w").write("MARK")
        except OSError:
            pass
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/pid_max",
                 "/proc/sysrq-trigger"):
        try:
            os.close(os.open(path, os.O_WRONLY))  # opened only: never written, in case it works
            print("OPENED", path)
        except OSError:
            pass
"""


@pytest.mark.parametrize("mode", MODES)
def test_host_kernel_settings_are_out_of_reach(mode):
    """Escape 3: a program changed the host's kernel.domainname; core_pattern, drop_caches, pid_max opened."""
    before = {name: Path(f"/proc/sys/kernel/{name}").read_text() for name in ("domainname", "hostname")}
    try:
        outcome = _run([_hostile(KERNEL)], mode)[0]
        after = {name: Path(f"/proc/sys/kernel/{name}").read_text() for name in before}
        assert after == before, outcome
        assert "OPENED" not in outcome.stdout, outcome.stdout
    finally:  # should the sandbox ever fail, leave the host as it was
        for name, value in before.items():
            if Path(f"/proc/sys/kernel/{name}").read_text() != value:
                Path(f"/proc/sys/kernel/{name}").write_text(value)


SOCKETS = """
    import socket
    for address in ADDRESSES:
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(1)
            client.connect(address)
            client.sendall(b"MARK")
            print("CONNECTED", address)
        except OSError:
            pass
"""


@pytest.mark.parametrize("mode", MODES)
def test_host_unix_sockets_are_unreachable(mode, tmp_path):
    """Escape 4: a program connected to a unix-domain socket on the host and the listener got its bytes."""
    paths = [f"/tmp/{MARK}.sock", str(tmp_path / "listener.sock"), f"\0{MARK}-abstract"]
    if os.access("/run", os.W_OK):
        paths.append(f"/run/{MARK}.sock")
    listeners = []
    try:
        for path in paths:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            server.listen()
            server.setblocking(False)
            listeners.append(server)
        outcome = _run([_hostile(SOCKETS.replace("ADDRESSES", repr(paths)))], mode)[0]
        for server in listeners:
            with pytest.raises(BlockingIOError):
                server.accept()
        assert "CONNECTED" not in outcome.stdout, outcome.stdout
    finally:
        for server in listeners:
            server.close()
        for path in paths:
            if not path.startswith("\0") and os.path.exists(path):
                os.unlink(path)


SECRETS = """
    import os
    for path in ("/etc/shadow", "/etc/gshadow", SECRET):
        try:
            print("READ", path, open(path).read()[:40].replace("\\n", " "))
        except OSError:
            pass
    for directory in ("/root", "/home", os.path.dirname(SECRET)):
        try:
            print("LISTED", directory, os.listdir(directory)[:20])
        except OSError:
            pass
    for device in ("/dev/kmsg", "/dev/console", "/dev/tty0", "/dev/kvm", "/dev/mem", "/dev/vda", "/dev/sda"):
        try:
            os.close(os.open(device, os.O_WRONLY))
            print("OPENED", device)
        except OSError:
            pass
"""


@ROOT_ONLY
@pytest.mark.parametrize("mode", MODES)
def test_host_secrets_and_devices_are_invisible(mode):
    """Escape 5: /etc/shadow and the checkout were readable; /dev/kmsg, the console, tty0 and kvm opened."""
    secret = Path.cwd() / f".{MARK}-secret"
    secret.write_text(f"secret-{MARK}")
    try:
        outcome = _run([_hostile(SECRETS.replace("SECRET", repr(str(secret))))], mode)[0]
    finally:
        secret.unlink()
    shadow = Path("/etc/shadow").read_text()[:40].replace("\n", " ")
    assert f"secret-{MARK}" not in outcome.stdout and secret.name not in outcome.stdout, outcome.stdout
    assert not (shadow.strip() and shadow in outcome.stdout), outcome.stdout
    assert "OPENED" not in outcome.stdout, outcome.stdout


@pytest.mark.parametrize("mode", MODES)
def test_a_directory_holding_the_runtime_is_hidden_but_the_runtime_stays(mode, monkeypatch):
    """Escape 5 again: with the venv inside the checkout (CI's clone), the checkout stayed listable and readable."""
    runtime = [Path(p) for p in _runtime_paths()]
    holder = Path(sys.prefix).resolve().parent
    kept = {p.relative_to(holder).parts[0] for p in runtime if p.is_relative_to(holder) and p != holder}
    if holder == Path("/") or not set(os.listdir(holder)) - kept:
        pytest.skip("the interpreter's directory has no sibling to hide")
    monkeypatch.setenv(HIDE_ENV, str(holder))
    body = f"""
        import os, numpy
        print("LISTED", sorted(os.listdir({str(holder)!r})))
    """
    outcome = _run([_hostile(body, RIGHT)], mode)[0]
    assert outcome.passed, (outcome.reason, outcome.stderr[-2000:])  # the runtime and site-packages still work
    assert f"LISTED {sorted(kept)}" in outcome.stdout, outcome.stdout


NPROC = """
    import os, time
    children = 0
    try:
        for _ in range(200):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as err:
        print("stopped by", type(err).__name__)
    print("children", children)
"""


@pytest.mark.parametrize("mode", MODES)
def test_the_process_limit_binds_even_as_root(mode):
    """Escape 6: RLIMIT_NPROC=64 did not bind for root (68 forks; only the control group stopped them)."""
    if mode == "namespaces" and os.geteuid() == 0:
        pytest.skip("mode namespaces keeps root's host uid, for which the kernel never applies RLIMIT_NPROC "
                    "(the worker's control group caps processes instead): documented in docs/scoring.md")
    outcome = _run([_hostile(NPROC)], mode, timeout=10)[0]
    assert "stopped by BlockingIOError" in outcome.stdout, outcome
    assert int(outcome.stdout.split("children")[1]) < LIMITS.processes, outcome.stdout


# ---------------------------------------------------------------- verdicts that cannot be forged

CHEATS = {
    "token from the program's globals and environment": """
        import os
        for fd in range(3, 12):
            for token in (globals().get("_cp_token"), os.environ.get("CODEPEFT_NONCE")):
                if token:
                    try:
                        os.write(globals().get("_cp_status_fd", fd), token.encode())
                    except OSError:
                        pass
        os._exit(0)
    """,
    "walk the frames up to the server's request": """
        import gc, sys
        found = []
        frame = sys._getframe()
        while frame is not None:
            found += [repr(v) for v in frame.f_locals.values()]
            frame = frame.f_back
        found += [repr(o)[:100000] for o in gc.get_objects() if isinstance(o, dict)]
        wanted = ("candidate(2, 3) " + "== 5", "CODEPEFT_" + "NONCE")  # never spelled out in this source
        leaked = [text for text in found if any(w in text for w in wanted)]
        print("LEAKED" if leaked else "nothing found")
    """,
    "settrace jumps over the asserts": """
        import sys
        def tracer(frame, event, arg):
            if event == "line" and "assert" in (frame.f_code.co_name + str(frame.f_code.co_consts)):
                try:
                    frame.f_lineno = frame.f_lineno + 1
                except ValueError:
                    pass
            return tracer
        sys.settrace(tracer)
    """,
    "an object equal to everything": """
        class Anything:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def add(a, b):
            return Anything()
    """,
    "an int subclass equal to everything": """
        class Five(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Five(a - b)
    """,
    "builtins patched to hide failures": """
        import builtins, sys, atexit, os
        builtins.AssertionError = type("Quiet", (Exception,), {})
        sys.excepthook = lambda *a: None
        atexit.register(lambda: os._exit(0))
    """,
}


@pytest.mark.parametrize("mode", MODES)
def test_verdicts_cannot_be_forged_from_inside(mode):
    """Cheats that made a wrong ``add`` pass: token theft, frame walking, settrace, ``__eq__`` tricks."""
    names = list(CHEATS)
    outcomes = _run([_hostile(CHEATS[name]) for name in names], mode)
    report = {name: (o.status, o.reason, o.stdout[:200]) for name, o in zip(names, outcomes, strict=True)}
    assert not any(o.passed for o in outcomes), report
    assert "LEAKED" not in outcomes[names.index("walk the frames up to the server's request")].stdout, report
    for name in ("an object equal to everything", "an int subclass equal to everything"):
        assert "not plain data" in report[name][1], report


@pytest.mark.parametrize("mode", MODES)
def test_expected_outputs_never_reach_the_candidate(mode):
    """Standard-input tests: the expected output lives only in the checker, also for a second sample of
    the same problem on the same server (nothing left over in the memory programs inherit)."""
    expected = f"EXPECTED-{MARK}"
    tests = {"kind": "apps-stdin", "inputs": ["1\n"], "outputs": [expected + "\n"]}
    hunt = textwrap.dedent("""
        import gc, sys
        texts = []
        for obj in gc.get_objects():
            if isinstance(obj, (dict, list, tuple)):
                texts.append(repr(obj)[:1000000])
        frame = sys._getframe()
        while frame is not None:
            texts += [repr(v) for v in frame.f_locals.values()]
            frame = frame.f_back
        marker = "EXPECTED" + "-"  # never spelled out in this source
        hits = [t for t in texts if marker in t]
        print(hits[0][hits[0].index(marker):][:30] if hits else "none")
    """)
    outcomes = run_many([build_program(hunt, tests)] * 2, workers=1, timeout=8, limits=LIMITS, mode=mode)
    assert not any(o.passed for o in outcomes), outcomes
    # What the candidate printed is quoted after "got" in the reason: never the expected output.
    assert all(MARK not in o.stdout + o.reason.split(", got ", 1)[1] for o in outcomes), outcomes


@pytest.mark.parametrize("mode", MODES)
def test_forged_sandbox_notices_do_not_set_the_reason(mode):
    """A forged "exited with status 0" text once set the reported crash reason."""
    forged = ("import sys\nsys.stderr.write('\\ncodepeft-sandbox: exit 0\\ncodepeft-sandbox: signal 9\\n"
              "exited with status 0\\n')\nsys.exit(3)\n")
    token_style = Program(forged)
    checker_style = _hostile(forged.replace("sys.exit(3)", "import os\nsys.stderr.flush()\nos._exit(3)"))
    outcomes = _run([token_style, checker_style], mode)
    assert [(o.status, o.reason) for o in outcomes] == [("crashed", "exited with status 3")] * 2, outcomes


# ---------------------------------------------------------------- codepeft itself as an unprivileged user

UNPRIVILEGED_SCRIPT = """
import json, sys
from codepeft.sandbox import Limits, Program, build_program, choose_mode, run_many
programs = [Program(source) if i == 0 else build_program(source, json.loads(sys.argv[2]))
            for i, source in enumerate(json.loads(sys.argv[1]))]
outcomes = run_many(programs, workers=2, timeout=8, limits=Limits(processes=16, output_bytes=8192))
print(json.dumps({"mode": choose_mode(), "outcomes": [[o.status, o.reason, o.stdout] for o in outcomes]}))
"""


def _unprivileged_python() -> tuple[list[str], dict[str, str]] | None:
    """How to run codepeft as ``nobody``: this interpreter if nobody may run it, else a system Python."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    src = str(Path(__file__).resolve().parents[1] / "src")
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(python):
            continue
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([src, *site_packages]), "HOME": "/tmp"}
        # The sandbox re-executes sys.executable: nobody must be able to run it, not only to start it.
        check = ("import subprocess, sys, codepeft.sandbox, psutil\n"
                 "subprocess.run([sys.executable, '-c', ''], check=True)")
        probe = subprocess.run([*as_nobody, python, "-c", check], env=env, capture_output=True, cwd="/tmp")
        if probe.returncode == 0:
            return [*as_nobody, python], env
    return None


@pytest.mark.skipif(_unprivileged_python() is None, reason="needs root, setpriv and a Python that user nobody can "
                    "run with codepeft and psutil importable")
def test_escapes_stay_closed_when_codepeft_runs_unprivileged():
    command, env = _unprivileged_python()
    sources = [textwrap.dedent(FILES_LEFT).replace("MARK", MARK) + "\nimport os\nprint('uid', os.getuid())\n",
               WRONG + "\n" + textwrap.dedent(KERNEL).replace("MARK", MARK),
               WRONG + "\n" + textwrap.dedent(NPROC), RIGHT, WRONG + "\n" + textwrap.dedent(CHEATS[
                   "token from the program's globals and environment"])]
    before = Path("/proc/sys/kernel/domainname").read_text()
    done = subprocess.run([*command, "-c", UNPRIVILEGED_SCRIPT, json.dumps(sources), json.dumps(ADD)], env=env,
                          capture_output=True, text=True, cwd="/tmp", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = result["outcomes"]
    assert result["mode"] in ("bubblewrap", "namespaces"), result
    assert [o[0] == "passed" for o in outcomes[1:]] == [False, False, True, False], outcomes
    assert "OPENED" not in outcomes[1][2] and Path("/proc/sys/kernel/domainname").read_text() == before
    assert "stopped by BlockingIOError" in outcomes[2][2], outcomes[2]
    assert "uid 65534" in outcomes[0][2], outcomes[0]
    for directory in ("/dev/shm", "/tmp", "/var/tmp", "/dev"):
        assert not (Path(directory) / MARK).exists()

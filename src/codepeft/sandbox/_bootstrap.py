"""The sandbox's process server: forks one isolated program per request, and its checker (stdlib only).

codepeft starts one server per worker (``isolation.server_command``), as ``python -I -S -c SOURCE
CONFIG_JSON``: inside bubblewrap (mode ``bubblewrap``: a new root holding only the Python runtime, no
network, an unprivileged uid), under ``unshare`` (mode ``namespaces``) or bare (mode ``rlimits``).
Each request line (JSON) carries a program's source, files, stdin, environment, limits and time-out,
and for call- and stdin-style tests a *checker*; the server answers one JSON line with how the program
ended, its captured output and, with a checker, the checker's verdict. Forking a warm interpreter is
what keeps execution cheap: no interpreter starts per program, and common standard-library modules are
imported once, before forking (``PRELOAD``).

Per program the server forks a child that starts a session, enters fresh user, mount, PID, network and
IPC namespaces and forks the namespace's init. The init mounts a private, size-limited ``/tmp`` (the
work directory is ``/tmp/work``) and ``/dev/shm``, covers ``/proc``, writes the program's files and
forks the program, which drops every capability and runs. When the program ends the init exits and
the kernel kills everything left in the namespace. Nothing the program writes reaches the host.

Verdicts. With a checker, the program is an *agent*: it runs the candidate's code, then answers calls
(``call NAME args``) with plain values only (None, bool, int, float, str, bytes, list, tuple, dict,
set, frozenset). The checker, a separate process forked from the server that never runs candidate code,
runs the test code with stand-ins that forward calls to the agent, and writes its verdict on a pipe
only the server reads. The candidate cannot see the checker (another PID namespace), read the tests
(they never enter its process) or hand it anything but plain data (``decode`` builds only those types).
Without a checker (doctests, raw programs) a program passes by writing a one-time token on fd 3.
How the program ended and any set-up problem reach the server on a private pipe, never through the
program's own output.
"""

import builtins
import contextlib
import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 32, 1024, 2048, 4096, 8192, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 4, 38, 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
LIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC,
          "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}
#: the uid and gid a program has inside its own user namespace (mapped onto the server's own ids)
PROGRAM_ID = 65534
WORKDIR = "/tmp/work"
MAX_MESSAGE = 64 << 20
# File descriptors inside the program: 0-2 as usual, 3 the status (token) file, 4/5 the agent's pipes.
STATUS_FD, AGENT_IN, AGENT_OUT = 3, 4, 5

libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype, flags, data=None):
    def enc(value):
        return value.encode() if value is not None else None

    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)


def call(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


# ---------------------------------------------------------------- plain values on the wire (both sides)

class NotPlain(TypeError):
    """A value that is not plain data: it cannot cross from the candidate to the checker."""


def encode(value):
    """A JSON-able form of a plain value; exact types only, so no subclass's methods ever run."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -(1 << 53) < value < (1 << 53) else ["i", hex(value)]
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else ["f", repr(value)]
    if kind is list or kind is tuple:
        return ["l" if kind is list else "t", [encode(item) for item in value]]
    if kind is set or kind is frozenset:
        return ["s" if kind is set else "z", [encode(item) for item in value]]
    if kind is dict:
        return ["d", [[encode(k), encode(v)] for k, v in dict.items(value)]]
    if kind is bytes:
        return ["b", value.hex()]
    if kind is complex:
        return ["c", [encode(value.real), encode(value.imag)]]
    if kind is type and getattr(builtins, value.__name__, None) is value:  # int, str, ... (MBPP passes types)
        return ["T", value.__name__]
    collections = sys.modules.get("collections")
    # Standard containers travel as their plain contents; the checker rebuilds genuine ones.
    for tag, name in (("C", "Counter"), ("O", "OrderedDict"), ("D", "defaultdict")):
        if collections is not None and kind is getattr(collections, name, None):
            return [tag, [[encode(k), encode(v)] for k, v in dict.items(value)]]
    if collections is not None and kind is getattr(collections, "deque", None):
        return ["q", [encode(item) for item in list(value)]]
    raise NotPlain(f"a value of type {kind.__name__}, which is not plain data (None, bool, int, float, complex, "
                   "str, bytes, list, tuple, dict, set and the collections module's containers)")


def decode(data):
    """The plain value ``encode`` described; anything else raises ``NotPlain``."""
    if data is None or type(data) in (bool, str, int, float):
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise NotPlain("malformed value")
    tag, body = data
    if tag == "i" and type(body) is str:
        return int(body, 16)
    if tag == "f" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "T" and type(body) is str and type(getattr(builtins, body, None)) is type:
        return getattr(builtins, body)
    if type(body) is not list:
        raise NotPlain("malformed value")
    if tag in ("l", "t", "s", "z", "q"):
        items = [decode(item) for item in body]
        if tag == "q":
            import collections

            return collections.deque(items)
        return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
    if tag == "c" and len(body) == 2 and all(type(part) in (int, float, list) for part in body):
        return complex(decode(body[0]), decode(body[1]))
    if tag in ("d", "C", "O", "D"):
        pairs = [(decode(pair[0]), decode(pair[1])) for pair in body if type(pair) is list and len(pair) == 2]
        if tag == "d":
            return dict(pairs)
        import collections

        if tag == "D":
            return collections.defaultdict(None, pairs)
        return (collections.Counter if tag == "C" else collections.OrderedDict)(dict(pairs))
    raise NotPlain("malformed value")


class Channel:
    """Newline-delimited JSON messages over a pair of pipe descriptors."""

    def __init__(self, read_fd, write_fd):
        self.read_fd, self.write_fd, self.pending, self.answered = read_fd, write_fd, b"", False

    def send(self, message):
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data):]

    def receive(self, timeout=None):
        """The next message; ``TimeoutError`` after ``timeout`` seconds, ``EOFError`` if the peer is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            if deadline is not None:
                poller = select.poll()
                poller.register(self.read_fd, select.POLLIN)
                if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    raise TimeoutError
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise EOFError
            self.pending += chunk
            if len(self.pending) > MAX_MESSAGE:
                raise NotPlain("message too large")
        line, self.pending = self.pending.split(b"\n", 1)
        self.answered = True
        return json.loads(line)


# ---------------------------------------------------------------- the agent (inside the program)

def describe(value):
    """How the checker may use one of the candidate's globals."""
    if type(value) is type(sys):
        return ["module", value.__name__]
    if callable(value):
        return ["callable"]
    try:
        return ["value", encode(value)]
    except (NotPlain, RecursionError):
        return ["other", type(value).__name__]


def exception_message(error):
    try:
        text = str(error)
    except Exception:
        text = ""
    return [type(error).__name__, text[:2000] if type(text) is str else ""]


def resolve(namespace, target, cache):
    if target in cache:
        return cache[target]
    if target.startswith("Solution()."):  # APPS: a method of a fresh Solution instance
        found = getattr(namespace["Solution"](), target.split(".", 1)[1])
    else:
        found = namespace[target]
    cache[target] = found
    return found


def flush():
    """The candidate's prints reach its output before the checker's verdict ends the program."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def answer(channel, namespace, message, cache):
    """Serve one request from the checker."""
    flush()
    op = message[0]
    if op == "names":
        channel.send(["names", {name: describe(namespace[name]) for name in message[1] if name in namespace}])
    elif op == "call":
        try:
            function = resolve(namespace, message[1], cache)
            result = encode(function(*decode(message[2]), **decode(message[3])))
            flush()
            channel.send(["ok", result])
        except SystemExit:
            raise
        except NotPlain as error:
            channel.send(["raise", "TypeError", f"the candidate returned {error}"])
        except BaseException as error:
            flush()
            channel.send(["raise", *exception_message(error)])
    elif op == "run":
        channel.send(["ran", *run_script(message[1], message[2])])


def run_script(stdin, timeout):
    """Run solution.py once on ``stdin`` (standard-input tests); the checker compares its output."""
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-I", "solution.py"], input=stdin, text=True, capture_output=True,
                              timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        return [None, "", ""]
    return [done.returncode, done.stdout, done.stderr[-2000:]]


def agent(script):
    """Run the candidate's code as ``__main__``, then answer the checker until it hangs up."""
    channel = Channel(AGENT_IN, AGENT_OUT)
    namespace = new_main(script)
    try:
        with open(script, "rb") as handle:
            exec(compile(handle.read(), namespace["__file__"], "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as error:
        sys.excepthook(*sys.exc_info())
        channel.send(["raise", *exception_message(error)])
        return 1
    cache = {}  # no "ready" message: the first answer says the candidate loaded (one round trip fewer)
    while True:
        try:
            message = channel.receive()
        except EOFError:
            return 0
        answer(channel, namespace, message, cache)


# ---------------------------------------------------------------- the checker (never runs candidate code)

class CandidateError(Exception):
    """An exception the candidate raised whose type is not a built-in one: reported by name."""


class CandidateGone(Exception):
    """The program ended (or stopped answering) before the tests finished."""


def rebuild(name, message):
    kind = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
        try:
            return kind(message)
        except Exception:
            pass
    return CandidateError(f"{name}: {message}" if message else str(name))


class Remote:
    """Stands in, in the checker, for a function defined by the candidate: calls go to the agent."""

    def __init__(self, channel, target):
        self._channel, self._target = channel, target

    def __call__(self, *args, **kwargs):
        self._channel.send(["call", self._target, encode(list(args)), encode(dict(kwargs))])
        return unwrap(self._channel, "ok")

    def __repr__(self):
        return f"<candidate function {self._target}>"


def unwrap(channel, expected):
    try:
        reply = channel.receive()
    except EOFError:
        raise CandidateGone("the program ended before the tests finished") from None
    if type(reply) is not list or not reply or type(reply[0]) is not str:
        raise NotPlain("malformed reply")
    if reply[0] == "raise" and len(reply) == 3:
        raise rebuild(reply[1], reply[2])
    if reply[0] != expected or len(reply) != 2:
        raise NotPlain("malformed reply")
    return decode(reply[1]) if expected == "ok" else reply[1]


def code_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= code_names(const)
    return names


def link_candidate(channel, namespace, names, remote_names):
    """Give the tests' namespace a stand-in for each of the candidate's globals they use."""
    # Built-in names stay the checker's own: a candidate's ``abs = ...`` cannot change how tests compare.
    wanted = (names - set(namespace) - set(dir(builtins))) | set(remote_names)
    for name, description in candidate_names(channel, sorted(wanted)).items():
        if description[0] == "callable":
            namespace[name] = Remote(channel, name)
        elif description[0] == "module" and type(description[1]) is str:
            top = description[1].split(".")[0]
            if top in sys.stdlib_module_names and top not in ("antigravity", "this"):
                with contextlib.suppress(ImportError):
                    namespace[name] = __import__(description[1], fromlist=["_"])
        elif description[0] == "value":
            namespace[name] = decode(description[1])


def candidate_names(channel, names):
    """``{name: description}`` for those of ``names`` the candidate defines (see ``describe``)."""
    channel.send(["names", names])
    found = unwrap(channel, "names")
    if type(found) is not dict or not all(type(d) is list and d and type(d[0]) is str for d in found.values()):
        raise NotPlain("malformed reply")
    return {name: found[name] for name in names if name in found}


def check(spec, channel):
    """Run the test code of ``spec`` against the agent; returns the verdict."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    namespace.update(checker_helpers(channel))
    if spec.get("prelude"):
        try:  # a prompt that is only a signature is not a module on its own: its helpers then run remotely
            prelude = compile(spec["prelude"], "<prompt>", "exec")
        except SyntaxError:
            prelude = None
        if prelude is not None:
            exec(prelude, namespace)
    code = compile(spec["code"], "<tests>", "exec")
    if spec.get("link", True):
        link_candidate(channel, namespace, code_names(code), spec.get("remote") or [])
    exec(code, namespace)
    if not channel.answered:  # tests that never called the candidate: it must at least have loaded
        candidate_names(channel, [])


def checker_helpers(channel):
    def candidate_function(target):
        return Remote(channel, target)

    def run_input(stdin, timeout):
        """(exit status or None on time-out, stdout, end of stderr) of solution.py on ``stdin``."""
        channel.send(["run", stdin, timeout])
        try:
            reply = channel.receive(timeout + 2.0)
        except TimeoutError:
            return [None, "", ""]
        except EOFError:
            raise CandidateGone("the program ended before the tests finished") from None
        if type(reply) is not list or len(reply) != 4 or reply[0] != "ran":
            raise NotPlain("malformed reply")
        status, out, err = reply[1:]
        if not (status is None or type(status) is int) or type(out) is not str or type(err) is not str:
            raise NotPlain("malformed reply")
        return [status, out, err]

    def defined(names):
        return {name: description[0] for name, description in candidate_names(channel, list(names)).items()}

    return {"_cp_candidate": candidate_function, "_cp_run": run_input, "_cp_defined": defined}


def checker(spec, channel, verdict_fd):
    try:
        check(spec, channel)
        verdict = {"passed": True, "reason": ""}
    except CandidateGone as error:
        verdict = {"passed": False, "reason": str(error), "gone": True}
    except BrokenPipeError:  # a question sent after the program ended: the same as a missing answer
        verdict = {"passed": False, "reason": "the program ended before the tests finished", "gone": True}
    except BaseException as error:
        name, text = type(error).__name__, str(error)
        reason = text if isinstance(error, CandidateError) else f"{name}: {text}" if text else name
        verdict = {"passed": False, "reason": reason[:300]}
    os.write(verdict_fd, json.dumps(verdict).encode() + b"\n")
    os._exit(0)


# ---------------------------------------------------------------- the program's namespaces and process

def new_main(script):
    main_module = type(sys)("__main__")
    main_module.__file__ = os.path.abspath(script)
    main_module.__builtins__ = builtins
    sys.modules["__main__"] = main_module
    sys.argv = [script]
    return main_module.__dict__


def run_as_main(script, with_agent):
    """Run ``script`` as ``python -I script`` would (or as the agent), then exit this process."""
    import atexit

    code = 0
    try:
        if with_agent:
            code = agent(script)
        else:
            namespace = new_main(script)
            with open(script, "rb") as handle:
                exec(compile(handle.read(), namespace["__file__"], "exec"), namespace)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def enter_namespaces():
    """New user (the server's ids appear as PROGRAM_ID), mount, PID, network and IPC namespaces."""
    uid, gid = os.geteuid(), os.getegid()
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # /proc/self/*_map belong to root while the server is not dumpable
    call(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    maps = (("uid_map", f"{PROGRAM_ID} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{PROGRAM_ID} {gid} 1"))
    for name, text in maps:
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def private_mounts(request, runtime=()):
    """In the init: fresh, size-limited /tmp (holding the work directory) and /dev/shm; /proc covered.

    A Python runtime living under /tmp (a checkout cloned there, with its .venv) is bound back read-only,
    or the program could not even start its interpreter's imports.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    size = request["workdir_bytes"]
    under_tmp = [p for p in runtime if p.startswith("/tmp/") and os.path.exists(p)]
    held = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in under_tmp]
    try:
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
        for path, fd in held:
            os.makedirs(path, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        for _, fd in held:
            os.close(fd)
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size},mode=1777")
    # A fresh procfs is refused under bubblewrap's masked one; an empty read-only /proc hides the server's.
    mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=555")


def write_files(workdir, request):
    os.makedirs(workdir, exist_ok=True)
    for name, text in {"main.py": request["source"], **request["files"]}.items():
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)


def set_limits(limits, notice_fd):
    for name, value in limits.items():
        if value is not None:
            try:
                # CPU: SIGXCPU at the soft limit names the cause; SIGKILL a second later if ignored.
                resource.setrlimit(LIMITS[name], (value, value + 1 if name == "cpu" else value))
            except (ValueError, OSError) as err:
                notice(notice_fd, f"limit {name}={value} not set: {err}")


def notice(fd, text):
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(text) + "\n").encode())


def drop_capabilities():
    """No capabilities, none to regain (bounding and ambient sets emptied), no set-uid gains."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)())


def init_process(request, config, parent, notice_fd):
    """The namespace's init: set up, fork the program, report how it ended on ``notice_fd``, exit.

    The program is not the init itself: an init ignores the signals it has no handler for (SIGXCPU at
    the CPU limit among them), which would change how programs end.
    """
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() not in (parent, 0):  # 0: the parent is outside this PID namespace
        os._exit(70)
    isolated = config["mode"] != "rlimits"
    workdir = WORKDIR if isolated else request["host_workdir"]
    if isolated:
        try:
            private_mounts(request, config.get("runtime", ()))
        except OSError as err:
            notice(notice_fd, f"filesystem not private: {err}")
    write_files(workdir, request)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # the program cannot trace its init or read its memory
    set_limits(request["limits"], notice_fd)
    program = os.fork()
    if program == 0:
        os.close(notice_fd)
        start_program(request, config, workdir)
    _, status = os.waitpid(program, 0)
    notice(notice_fd, ["status", status])
    os._exit(0)


def start_program(request, config, workdir):
    """In the program's own process, before any of its code runs."""
    drop_capabilities()
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the interpreter's own streams, never closed
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.path[:] = [workdir, *sys.path[1:], *config["site_packages"]]
    run_as_main("main.py", bool(request["checker"]))


def arrange_fds(fds):
    """``fds[i]`` becomes descriptor i; every other descriptor is closed."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # above every target: none overwritten
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(fds), resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def candidate_side(request, config, fds):
    """The forked child: a session of its own, namespaces, the init. Never returns."""
    try:
        server = os.getppid()
        os.setsid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a killed server takes its program with it
        if os.getppid() != server:
            os._exit(70)
        arrange_fds(fds)
        notice_fd = len(fds) - 1
        if config["mode"] != "rlimits":
            enter_namespaces()
        parent = os.getpid()
        init = os.fork()
        if init == 0:
            init_process(request, config, parent, notice_fd)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        os.waitpid(init, 0)
        if config["mode"] == "rlimits":
            with contextlib.suppress(OSError):
                os.killpg(0, signal.SIGKILL)
        os._exit(0)
    except BaseException as err:
        notice(len(fds) - 1, f"sandbox set-up failed: {err}")
    finally:
        os._exit(71)


def checker_side(spec, fds):
    """A checker process: the tests of one program, against its agent; the verdict on fds[2]."""
    try:
        os.setsid()
        arrange_fds(fds)
        signal.alarm(int(spec["timeout"]) + 5)  # never outlives its program for long
        for name in ("cpu", "as", "fsize"):
            value = spec["limits"].get(name)
            if value is not None:
                resource.setrlimit(LIMITS[name], (value, value + 1 if name == "cpu" else value))
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the tests' prints go nowhere
        checker(spec["checker"], Channel(0, 1), 2)
    finally:
        os._exit(72)


def checker_parent(spec_fd, control):
    """Forked by the server before its first request, so its memory holds no program's data.

    Tests reach the checkers from codepeft on their own pipe (``spec_fd``) and never pass through the
    server, whose memory every program inherits: a program cannot find its tests, or another
    program's, in its own memory. One checker is always forked in advance, waiting for the next
    program (its three pipes, sent by the server on ``control``, and its tests), so starting a
    checker costs a program nothing.
    """
    specs = Channel(spec_fd, -1)
    while True:
        taken, took = os.pipe()
        if os.fork() == 0:
            os.close(taken)
            try:
                _, fds, _, _ = socket.recv_fds(control, 16, 3)
                spec = specs.receive() if len(fds) == 3 else None
            except (OSError, EOFError, ValueError):
                spec = None
            if spec is None:  # the server is gone: so is this parent, seeing no "took"
                os._exit(0)
            os.write(took, b"t")  # the parent may fork the next checker now
            os.close(took)
            control.close()
            checker_side(spec, fds)
        os.close(took)
        took_work = os.read(taken, 1) == b"t"
        os.close(taken)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not took_work:
            os._exit(0)


def start_checker_parent(config):
    """The checker parent (see ``checker_parent``) and the socket that sends it each checker's pipes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.fork() == 0:
        ours.close()
        os.close(0)
        os.close(1)
        checker_parent(config["spec_fd"], theirs)
    theirs.close()
    os.close(config["spec_fd"])
    return ours


# ---------------------------------------------------------------- the server

def memfile(name, data=b""):
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_head(fd, cap):
    return os.pread(fd, cap + 1, 0)


def read_tail(fd, size=4096):
    end = os.fstat(fd).st_size
    return os.pread(fd, size, max(0, end - size))


def wait_for(request, child, verdict_fd):
    """Wait for the verdict (or the program, without a checker) until the time-out; returns what ended it."""
    deadline = time.monotonic() + request["timeout"]
    child_fd = os.pidfd_open(child)
    poller = select.poll()
    poller.register(child_fd, select.POLLIN)
    if verdict_fd is not None:
        poller.register(verdict_fd, select.POLLIN)
    verdict, child_done, timed_out = b"", False, False
    try:
        while True:
            left = deadline - time.monotonic()
            events = dict(poller.poll(max(0.0, left) * 1000)) if left > 0 else {}
            if not events:
                timed_out = True
                break
            if verdict_fd is not None and verdict_fd in events:
                chunk = os.read(verdict_fd, 1 << 16)
                verdict += chunk
                if not chunk or verdict.endswith(b"\n"):
                    break
            if child_fd in events:
                poller.unregister(child_fd)
                child_done = True
                if verdict_fd is None:
                    break
    finally:
        os.close(child_fd)
    return verdict, child_done, timed_out


def kill_and_reap(pid, mode):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL) if mode == "rlimits" else os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_request(request, config):
    started = time.perf_counter()
    cap = request["output_bytes"]
    stdin = memfile("stdin", request["stdin"].encode())
    out, err, status = memfile("stdout"), memfile("stderr"), memfile("status")
    notice_read, notice_write = os.pipe()
    fds = [stdin, out, err, status]
    verdict_read = None
    if request["checker"]:
        to_agent, from_agent, (verdict_read, verdict_write) = os.pipe(), os.pipe(), os.pipe()
        fds += [to_agent[0], from_agent[1]]
    if verdict_read is not None:  # the waiting checker starts on its tests while the program is set up
        socket.send_fds(config["control"], [b"c"], [from_agent[0], to_agent[1], verdict_write])
        for fd in (from_agent[0], to_agent[1], verdict_write):
            os.close(fd)
    child = os.fork()
    if child == 0:
        candidate_side(request, config, [*fds, notice_write])
    if verdict_read is not None:
        for fd in (to_agent[0], from_agent[1]):
            os.close(fd)
    os.close(notice_write)
    verdict, _child_done, timed_out = wait_for(request, child, verdict_read)
    kill_and_reap(child, config["mode"])
    if verdict_read is not None:
        os.close(verdict_read)  # a checker still running gets EPIPE, and its alarm ends it anyway
    notices, how = read_notices(notice_read)
    head_out, head_err = read_head(out, cap), read_head(err, cap)
    reply = {"timed_out": timed_out and not verdict, "wait_status": how, "notices": notices,
             "verdict": json.loads(verdict) if verdict.endswith(b"\n") else None,
             "stdout": head_out[:cap].decode("utf-8", "replace"), "stdout_cut": len(head_out) > cap,
             "stderr": head_err[:cap].decode("utf-8", "replace"), "stderr_cut": len(head_err) > cap,
             "stderr_tail": read_tail(err).decode("utf-8", "replace"),
             "token": os.pread(status, 64, 0).decode("utf-8", "replace"),
             "seconds": time.perf_counter() - started}
    for fd in (stdin, out, err, status, notice_read):
        os.close(fd)
    if config["mode"] == "rlimits":
        import shutil

        shutil.rmtree(request["host_workdir"], ignore_errors=True)
    return reply


def read_notices(fd):
    """What the program's init and set-up reported; never waits for a namespace still being torn down."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            data += chunk
            if len(data) > 1 << 20:
                break
    notices, how = [], None
    for line in data.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, list):
                how = item[1]
            else:
                notices.append(str(item))
    return notices, how


# ---------------------------------------------------------------- the namespaces mode's own file system

def mount_points():
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            target = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            points.append((target, fields[5].split(",")))
    return points


def hide(path, keep):
    """Cover ``path`` with an empty tmpfs (or /dev/null for a file); the paths in ``keep`` under it stay.

    A directory holding kept paths (the checkout holding its ``.venv``, ``/root`` holding pyenv's Python)
    is covered whole, and the kept paths are bound back in: its other entries are neither readable nor
    listed, including files created after the server started.
    """
    if path in keep or os.path.islink(path) or not os.path.exists(path):
        return
    inside = [k for k in keep if k.startswith(path.rstrip("/") + "/")]
    try:
        if not os.path.isdir(path):
            mount("/dev/null", path, None, MS_BIND)
            return
        cover(path, [k for k in inside if not any(k.startswith(o + "/") for o in inside)])
        return
    except OSError as err:
        warn(f"could not hide {path}: {err}")
    if inside:  # second best: cover its entries one by one
        with contextlib.suppress(OSError):
            for entry in os.listdir(path):
                hide(os.path.join(path, entry), inside)


def cover(path, inside):
    """A tmpfs over the directory ``path``, with the paths ``inside`` it bound back (read-only later)."""
    held = []
    try:
        for kept in filter(os.path.exists, inside):  # held open: the only way back once the tmpfs covers them
            held.append((kept, os.open(kept, os.O_PATH | os.O_CLOEXEC), os.path.isdir(kept)))
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        try:
            for kept, fd, is_dir in held:
                os.makedirs(kept if is_dir else os.path.dirname(kept), 0o755, exist_ok=True)
                if not is_dir:
                    open(kept, "a").close()
                # Recursive: a plain bind of a tree holding mounts locked by the user namespace is refused.
                mount(f"/proc/self/fd/{fd}", kept, None, MS_BIND | MS_REC)
        except OSError:
            # The runtime must stay reachable: uncover (a recursive detach, so binds made go too).
            call(libc.umount2(path.encode(), MNT_DETACH), f"uncover {path}")
            raise
    finally:
        for _, fd, _ in held:
            os.close(fd)


def minimal_dev(staging):
    """Replace /dev by a tmpfs holding only null, zero, full, random, urandom and an empty shm."""
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in ("null", "zero", "full", "random", "urandom"):
        open(os.path.join(staging, name), "w").close()
        mount(f"/dev/{name}", os.path.join(staging, name), None, MS_BIND)
    os.mkdir(os.path.join(staging, "shm"), 0o1777)
    mount(staging, "/dev", None, MS_MOVE)


def lock_filesystem(config):
    """Once per server (mode ``namespaces``): hide what must not be read, a minimal /dev, all read-only."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = [os.path.realpath(k) for k in config["keep"]]
    for path in config["hide"]:
        hide(os.path.realpath(path), keep)
    try:
        minimal_dev(config["staging"])
    except OSError as err:
        warn(f"could not replace /dev: {err}")
    for target, options in mount_points():
        if target.startswith(("/proc", "/dev")) or "ro" in options:
            continue
        remount_read_only(target, options)


def remount_read_only(target, options):
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for name in options:
        flags |= KEEP_FLAGS.get(name, 0)
    try:
        mount(None, target, None, flags)
    except OSError as err:
        warn(f"could not make {target} read-only: {err}")


SERVER_NOTICES = []


def warn(message):
    SERVER_NOTICES.append(message)


# Standard-library modules most generated code imports (HumanEval prompts start with `from typing import
# List`): imported once here, every forked program finds them ready instead of importing them again.
# Nothing that seeds state at import time (random, tempfile, uuid, secrets): each program gets its own.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "string", "heapq", "bisect",
           "operator", "copy", "subprocess")


def preload():
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    # Frozen objects are never traversed by the collector, so forked programs copy fewer memory pages.
    gc.collect()
    gc.freeze()


def serve():
    config = json.loads(sys.argv[1])
    preload()
    if config["mode"] == "namespaces":
        try:
            lock_filesystem(config)
        except OSError as err:
            warn(f"filesystem not locked: {err}")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    sys.path[:] = [*sys.path, *config["site_packages"]]
    config["control"] = start_checker_parent(config)
    requests = os.fdopen(0, "rb", buffering=0)
    os.write(1, (json.dumps({"ready": True, "notices": SERVER_NOTICES}) + "\n").encode())
    while True:
        line = b""
        while not line.endswith(b"\n"):
            chunk = requests.read(1 << 16)
            if not chunk:
                return
            line += chunk
        reply = run_request(json.loads(line), config)
        os.write(1, (json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    serve()

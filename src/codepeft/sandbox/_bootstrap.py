"""The sandbox's process server: forks one isolated process tree per program (stdlib only).

codepeft starts one server per worker, as ``python -I -S _bootstrap.py CONFIG_JSON``; with namespaces
it runs under ``unshare --user --map-root-user --net --mount`` (its own user and mount namespaces, no
network), hides the home directories behind empty tmpfs mounts and makes every mount read-only except
its base directory, which holds each program's files. Each
request line (JSON) names a work directory, files for stdin/stdout/stderr/status, the environment
and the limits; the server forks and answers ``started PID``, then ``done STATUS`` once that child is
gone. Forking a warm interpreter is what keeps execution cheap: no interpreter starts per program, and
common standard-library modules are imported once, before forking (see ``PRELOAD``).

The forked child (its own session) enters fresh mount and PID namespaces and forks the namespace's
init. The init turns its work directory into a size-limited tmpfs (with the program's files), makes
the rest of the base read-only, mounts a fresh /proc, enters
a nested user namespace (whose copies of
those mounts are locked, and which gives the program its own process count), sets the resource
limits and forks the program, which drops every capability and runs as ``__main__``. The init stays
as the program's parent: "kill my parent" cannot reach codepeft, and when the init dies the kernel
kills every process left in the namespace (daemons and double-forked grandchildren included).
codepeft kills the child's process group on time-out. Steps the kernel refuses are reported on
stderr as ``codepeft-sandbox:`` lines and the run goes on with what did work.
"""

import contextlib
import ctypes
import gc
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SIGKILL = 9
KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
LIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC,
          "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}

libc = ctypes.CDLL(None, use_errno=True)


def warn(message):
    os.write(2, f"\ncodepeft-sandbox: {message}\n".encode())  # own line even after partial output


def mount(source, target, fstype, flags, data=None):
    def enc(value):
        return value.encode() if value is not None else None

    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)


def mount_points():
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            target = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            points.append((target, fields[5].split(",")))
    return points


def hide(path, keep):
    """Cover ``path`` with an empty tmpfs (or /dev/null for a file), except the paths in ``keep``."""
    inside = [k for k in keep if k == path or k.startswith(path.rstrip("/") + "/")]
    if path in keep or os.path.islink(path):
        return
    if not inside:
        try:
            if os.path.isdir(path):
                mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            elif os.path.exists(path):
                mount("/dev/null", path, None, MS_BIND)
        except OSError as err:
            warn(f"could not hide {path}: {err}")
        return
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for entry in entries:
        hide(os.path.join(path, entry), inside)


def lock_filesystem(base, hidden, keep):
    """Once per server: hide ``hidden`` (but ``keep``), and make every mount read-only except ``base``."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in hidden:
        hide(os.path.realpath(path), [os.path.realpath(k) for k in [*keep, base]])
    mount(base, base, None, MS_BIND)
    for target, options in mount_points():
        if target == base or target.startswith(("/proc", "/dev")) or "ro" in options:
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


def call(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def drop_capabilities():
    """No capabilities, and none to gain through set-uid programs."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        warn("could not set no_new_privs")
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        warn(f"could not drop capabilities: {os.strerror(ctypes.get_errno())}")


def wait_and_relay(pid):
    """Wait for ``pid`` and exit the same way (a signal death is reported, as it cannot be re-raised)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        warn(f"signal {os.WTERMSIG(status)}")
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def run_as_main(script):
    """Run ``script`` as ``python -I script`` would, then exit this process."""
    import atexit

    main_module = type(sys)("__main__")
    main_module.__file__ = os.path.abspath(script)
    main_module.__builtins__ = __builtins__
    sys.modules["__main__"] = main_module
    sys.argv = [script]
    code = 0
    try:
        with open(script, "rb") as handle:
            program = compile(handle.read(), main_module.__file__, "exec")
        exec(program, main_module.__dict__)
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


def redirect(request):
    """The request's files become stdin/stdout/stderr and fd 3 (status); every other fd is closed."""
    fds = [os.open(request["stdin"], os.O_RDONLY),
           os.open(request["stdout"], os.O_WRONLY),
           os.open(request["stderr"], os.O_WRONLY),
           os.open(request["status"], os.O_WRONLY)]
    for target, fd in enumerate(fds):
        os.dup2(fd, 10 + target)
    for target in range(4):
        os.dup2(10 + target, target)
    os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def isolate_and_run(request, config):
    """In the forked child: new session, namespaces, the init, the program. Never returns."""
    os.setsid()
    redirect(request)
    namespaces = config["namespaces"]
    if namespaces:
        call(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
    parent = os.getpid()
    init = os.fork()
    if init:
        # Report how the program ended, then take down whatever is left in this session (this
        # process included): codepeft never has to signal a process group after it was reaped.
        _, status = os.waitpid(init, 0)
        if os.WIFSIGNALED(status):
            warn(f"signal {os.WTERMSIG(status)}")
        else:
            warn(f"exit {os.WEXITSTATUS(status)}")
        os.killpg(0, SIGKILL)
    # The namespace's init: it dies with the process codepeft kills on time-out.
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() not in (parent, 0):  # 0: the parent is outside this PID namespace
        os._exit(70)
    workdir = request["workdir"]
    if namespaces:
        # Only this program's work directory stays writable: the rest of the server's writable base
        # (other programs' directories) turns read-only in this mount namespace.
        try:
            # The work directory becomes a small tmpfs of its own (fast, and bounded in size).
            files = {}
            for name in os.listdir(workdir):
                with open(os.path.join(workdir, name), "rb") as handle:
                    files[name] = handle.read()
            mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={request['workdir_bytes']},mode=0777")
            for name, data in files.items():
                with open(os.path.join(workdir, name), "wb") as handle:
                    handle.write(data)
            remount_read_only(config["base"], [])
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as err:
            warn(f"filesystem not locked: {err}")
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            warn(f"no nested user namespace: {os.strerror(ctypes.get_errno())}")
    os.chdir(workdir)
    for name, value in request["limits"].items():
        if value is not None:
            try:
                # CPU: SIGXCPU at the soft limit names the cause; SIGKILL a second later if ignored.
                resource.setrlimit(LIMITS[name], (value, value + 1 if name == "cpu" else value))
            except (ValueError, OSError) as err:
                warn(f"limit {name}={value} not set: {err}")
    program = os.fork()
    if program:
        wait_and_relay(program)
    drop_capabilities()
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the interpreter's own streams, never closed
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.path[:] = [workdir, *sys.path[1:], *config["site_packages"]]
    run_as_main(request["script"])


# Standard-library modules most generated code imports (HumanEval prompts start with `from typing import
# List`): imported once here, every forked program finds them ready instead of importing them again.
# Nothing that seeds state at import time (random, tempfile, uuid, secrets): each program gets its own.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "string", "heapq", "bisect",
           "operator", "copy")


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
    if config["namespaces"]:
        try:
            lock_filesystem(config["base"], config["hide"], config["keep"])
        except OSError as err:
            warn(f"filesystem not locked: {err}")
    requests = os.fdopen(0, "rb", buffering=0)
    while True:
        line = b""
        while not line.endswith(b"\n"):
            chunk = requests.read(1 << 16)
            if not chunk:
                return
            line += chunk
        request = json.loads(line)
        child = os.fork()
        if child == 0:
            try:
                isolate_and_run(request, config)
            except BaseException as err:  # report anything; never fall back into this loop
                warn(f"sandbox set-up failed: {err}")
            finally:
                os._exit(71)
        os.write(1, f"started {child}\n".encode())
        _, status = os.waitpid(child, 0)
        os.write(1, f"done {status}\n".encode())


serve()

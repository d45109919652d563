"""Runs first inside the sandbox's namespaces, then runs the program in a forked child (stdlib only).

Started as ``python -I -S _bootstrap.py SPEC_JSON`` by ``unshare`` (new user, mount, PID and network
namespaces). As root of the fresh user namespace it makes every mount read-only except the work
directory, hides the home directories behind empty tmpfs mounts, then enters a nested user namespace
(whose copies of those mounts are locked) and sets resource limits. It then forks: the child drops
every capability and runs the program; this process waits as its parent and the namespace's init.
Any step the kernel refuses is reported on stderr as a ``codepeft-sandbox:`` line and the run goes
on with what did work.
"""

import ctypes
import json
import os
import resource
import runpy
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
PR_SET_NO_NEW_PRIVS = 38
KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
LIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC,
          "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}

libc = ctypes.CDLL(None, use_errno=True)


def warn(message):
    sys.stderr.write(f"codepeft-sandbox: {message}\n")


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


def lock_filesystem(workdir, hidden, keep):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(workdir, workdir, None, MS_BIND)
    for path in hidden:
        hide(os.path.realpath(path), [os.path.realpath(k) for k in [*keep, workdir]])
    for target, options in mount_points():
        if target == workdir or target.startswith(("/proc", "/dev")) or "ro" in options:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name in options:
            flags |= KEEP_FLAGS.get(name, 0)
        try:
            mount(None, target, None, flags)
        except OSError as err:
            warn(f"could not make {target} read-only: {err}")


def main():
    spec = json.loads(sys.argv[1])
    workdir = spec["workdir"]
    if spec.get("lock_filesystem"):
        try:
            lock_filesystem(workdir, spec.get("hide", []), spec.get("keep", []))
        except OSError as err:
            warn(f"filesystem not locked: {err}")
        # A nested user namespace without a uid map: after exec the program has no capabilities,
        # so it can neither remount nor unmount what was just locked.
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            warn(f"could not drop capabilities: {os.strerror(ctypes.get_errno())}")
    os.chdir(workdir)
    for name, value in spec.get("limits", {}).items():
        if value is not None:
            try:
                # CPU: SIGXCPU at the soft limit names the cause; SIGKILL a second later if ignored.
                resource.setrlimit(LIMITS[name], (value, value + 1 if name == "cpu" else value))
            except (ValueError, OSError) as err:
                warn(f"limit {name}={value} not set: {err}")
    # This process stays in between as the program's parent (and, with namespaces, the namespace's
    # init): "kill my parent" hits it rather than codepeft, and it reports how the program ended,
    # which unshare's own exit status does not say reliably for signals.
    child = os.fork()
    if child:
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status):
            warn(f"signal {os.WTERMSIG(status)}")
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.WEXITSTATUS(status))
    drop_capabilities()
    # The program runs in this (forked) interpreter, as ``python -I main.py`` would run it: this saves
    # starting a second interpreter per program. An uncaught exception prints its traceback and exits 1.
    sys.argv = [spec["script"]]
    # Started with -S (faster): site-packages go on the path directly, without running .pth hooks.
    sys.path[:] = [workdir, *sys.path[1:], *spec.get("site_packages", [])]
    runpy.run_path(spec["script"], run_name="__main__")


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


main()

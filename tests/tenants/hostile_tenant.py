#!/usr/bin/env python3
"""Hostile traced processes for tests/hostile_tenants.rs (issue 15, findings 3, 4).

  hostile_tenant.py truncate DIR ELF ATTEMPTS
      Copies ELF into DIR, maps the copy executable, passes an address inside
      it to cudaLaunchKernel, then truncates the copy to 0 bytes; once the
      tracer (this process's parent) is seen to map the copy, or after a
      second, whichever is first. ATTEMPTS times, each with a new copy.
  hostile_tenant.py flood MAPPINGS LAUNCHES -- WORKLOAD...
      Makes MAPPINGS mappings of one file, then LAUNCHES launches, each with
      a distinct unmapped address, and starts WORKLOAD three quarters of the
      way in (past what a 16 MiB ring buffer holds), so it runs while the
      flood goes on; waits for WORKLOAD.
  hostile_tenant.py fork CHILDREN
      Forks CHILDREN processes that are all alive at once, then each makes
      one cudaMalloc and one cudaFree.

The fixture libcudart (LD_LIBRARY_PATH) records every call as ground truth.
Prints what it did on stdout; exits non-zero if it could not do it.
"""
import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import time


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


def runtime():
    rt = ctypes.CDLL("libcudart.so.12")
    rt.cudaLaunchKernel.argtypes = [ctypes.c_void_p, Dim3, Dim3, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    rt.cudaLaunchKernel.restype = ctypes.c_int
    rt.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
    rt.cudaFree.argtypes = [ctypes.c_void_p]
    return rt


def launch(rt, addr):
    return rt.cudaLaunchKernel(addr, Dim3(1, 1, 1), Dim3(32, 1, 1), None, 0, None)


def mapped_by(pid, path):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any(line.rstrip().endswith(path) for line in maps)
    except OSError:
        return False


def truncate(directory, elf, attempts):
    rt = runtime()
    tracer = os.getppid()
    for i in range(attempts):
        path = os.path.join(directory, f"stub-{i}.so")
        shutil.copyfile(elf, path)
        fd = os.open(path, os.O_RDWR)
        size = os.fstat(fd).st_size
        addr = map_file(fd, size, mmap.MAP_SHARED, 0) + size // 2
        ret = launch(rt, addr)
        deadline = time.monotonic() + 1.0
        seen = False
        while time.monotonic() < deadline and not seen:
            seen = mapped_by(tracer, path)
            if not seen:
                time.sleep(0.0005)
        os.ftruncate(fd, 0)
        when = "while the tracer mapped it" if seen else "after 1 s"
        print(f"launch {addr:#x} ret {ret}; truncated {path} {when}", flush=True)
        os.close(fd)
    return 0


def map_file(fd, size, flags, offset):
    """mmap(2) of `fd`, readable and executable, returning its address."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_EXEC, flags, fd, offset)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise SystemExit(f"mmap: {os.strerror(ctypes.get_errno())}")
    return addr


def flood(mappings, launches, workload):
    rt = runtime()
    path = f"/tmp/hostile-tenant-{os.getpid()}.bin"
    with open(path, "wb") as f:
        f.write(b"\0" * mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    # All at offset 0: neighbouring mappings never merge into one.
    regions = [map_file(fd, mmap.PAGESIZE, mmap.MAP_PRIVATE, 0) for _ in range(mappings)]
    with open("/proc/self/maps") as maps:
        count = sum(1 for _ in maps)
    # Below any mapping: an executable's image starts far higher.
    base = 0x100000
    failed, child = 0, None
    for i in range(launches):
        if i == launches * 3 // 4:
            child = subprocess.Popen(workload)
        failed += launch(rt, base + 16 * i) != 0
    print(f"{len(regions)} mappings ({count} lines in maps), {launches} launches ({failed} failed)", flush=True)
    return child.wait()


def fork(children):
    rt = runtime()
    release_r, release_w = os.pipe()
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            os.close(release_w)
            os.read(release_r, 1)
            ptr = ctypes.c_void_p()
            rt.cudaMalloc(ctypes.byref(ptr), 4096)
            rt.cudaFree(ptr)
            os._exit(0)
        pids.append(pid)
    os.close(release_w)  # every child reads EOF: all were alive until now
    bad = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    print(f"{children} children, {len(bad)} failed", flush=True)
    return 1 if bad else 0


def main(argv):
    if argv[:1] == ["truncate"] and len(argv) == 4:
        return truncate(argv[1], argv[2], int(argv[3]))
    if argv[:1] == ["flood"] and len(argv) > 4 and argv[3] == "--":
        return flood(int(argv[1]), int(argv[2]), argv[4:])
    if argv[:1] == ["fork"] and len(argv) == 2:
        return fork(int(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Boot a stock Debian kernel under QEMU and run one command in it, on this host's files.

    python tests/qemu/qemu_harness.py build          # fetch the kernel, build the initramfs
    python tests/qemu/qemu_harness.py run -- CMD...  # boot, run CMD in the repo, print its output

How (../shared/NOTES.md has the measurements):
- `apt-get download` the kernel package that `linux-image-amd64` depends on, `dpkg-deb -x`
  it, extract the uncompressed ELF `vmlinux` from the bzImage (PVH boot, ~2x faster),
  index its modules with `busybox depmod` (the package ships no index, there is no kmod).
- A busybox-static initramfs insmods virtio_pci, 9pnet_virtio, 9p and overlay, mounts the
  host `/` read-only over virtio-9p under a tmpfs overlay, binds the extracted modules
  so that XFRM/ESP/nftables modules autoload, chroots, runs the command, prints its exit
  status after a marker on the serial console and powers off.
- TCG, not KVM: /dev/kvm here is a nested PVM and a stock kernel hangs under it.

Standard library only: CI runs it before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RBIPSEC_QEMU_CACHE", REPO / ".cache" / "qemu"))
EXIT_MARKER = "RBIPSEC-GUEST-EXIT="
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
QEMU = "qemu-system-x86_64"
ELF_MAGIC = b"\x7fELF"


class HarnessUnavailable(Exception):
    """QEMU, busybox or the kernel package cannot be had on this machine."""


@dataclass(frozen=True)
class GuestImage:
    vmlinux: Path
    initramfs: Path
    kernel_version: str


@dataclass(frozen=True)
class GuestResult:
    exit_status: int | None  # None: the marker never came (crash, timeout)
    output: str
    seconds: float


# -- building ---------------------------------------------------------------------------
def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise HarnessUnavailable(f"{argv[0]} is not installed") from exc
    if done.returncode != 0:
        raise HarnessUnavailable(f"{shlex.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return str(done.stdout)


def kernel_package() -> str:
    """The versioned package `linux-image-amd64` points at (linux-image-6.1.0-NN-amd64)."""
    depends = _run(["apt-cache", "depends", "linux-image-amd64"])
    found = re.findall(r"Depends: (linux-image-\S+)", depends)
    if not found:
        raise HarnessUnavailable("apt-cache knows no linux-image-amd64 (run apt-get update)")
    return str(found[0])


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF inside a bzImage: try each xz/gzip stream until one decompresses to ELF."""

    def unxz(data: bytes) -> bytes:
        return lzma.LZMADecompressor().decompress(data)

    def gunzip(data: bytes) -> bytes:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)

    decoders = ((b"\xfd7zXZ\x00", unxz), (b"\x1f\x8b\x08", gunzip))
    for magic, decode in decoders:
        start = bzimage.find(magic)
        while start != -1:
            try:
                payload = decode(bzimage[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                payload = b""
            if payload.startswith(ELF_MAGIC):
                return payload
            start = bzimage.find(magic, start + 1)
    raise HarnessUnavailable("no ELF payload in the kernel image")


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One entry of a `newc` cpio archive (the initramfs format)."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(files: dict[str, bytes | str | None]) -> bytes:
    """files: path -> bytes (executable file), str (symlink target), None (directory)."""
    archive = bytearray()
    for ino, (name, content) in enumerate(sorted(files.items()), start=1):
        if content is None:
            archive += _cpio_entry(name, stat.S_IFDIR | 0o755, ino=ino)
        elif isinstance(content, str):
            archive += _cpio_entry(name, stat.S_IFLNK | 0o777, content.encode(), ino=ino)
        else:
            archive += _cpio_entry(name, stat.S_IFREG | 0o755, content, ino=ino)
    archive += _cpio_entry("TRAILER!!!", 0)
    return bytes(archive)


def _module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative paths) to insmod, dependencies first, from modules.dep."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
    by_name = {Path(path).name.removesuffix(".ko"): path for path in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        if name not in by_name:
            raise HarnessUnavailable(f"kernel has no module {name}")
        visit(by_name[name])
    return order


INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
. /etc/guest.conf
for module in $BOOT_MODULES; do insmod "/boot-modules/$module" || echo "insmod $module failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host
mount -t tmpfs -o size=1g tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot
mount --bind "/host$MODULES_DIR" /lib/modules
echo /bin/modprobe > /proc/sys/kernel/modprobe
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
# /tmp stays the host's (through the overlay, writes land in the guest's tmpfs): the
# project checkout and its venv may live there, as in CI's fresh clone.
mount -t tmpfs tmpfs /newroot/run
script=$(sed -n 's/.*rbipsec\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
chroot /newroot /bin/sh "$script" </dev/console >/dev/console 2>&1
echo "RBIPSEC-GUEST-EXIT=$?"
sync
poweroff -f
"""


def build(cache: Path = CACHE) -> GuestImage:
    """Fetch and prepare everything once; later calls reuse the cache."""
    for tool in (QEMU, "busybox", "dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            raise HarnessUnavailable(f"{tool} is not installed")
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    root = cache / package
    # The initramfs is named after its init script, so a changed script is rebuilt.
    stamp = hashlib.sha256(INIT_SCRIPT.encode()).hexdigest()[:12]
    image = GuestImage(root / "vmlinux", root / f"initramfs-{stamp}.cpio", version)
    if image.vmlinux.exists() and image.initramfs.exists():
        return image
    root.mkdir(parents=True, exist_ok=True)
    debs = list(root.glob(f"{package}_*.deb"))
    if not debs:
        _run(["apt-get", "download", "-q", package], cwd=root)
        debs = list(root.glob(f"{package}_*.deb"))
    if not debs:
        raise HarnessUnavailable(f"apt-get download {package} produced no .deb")
    tree = root / "tree"
    _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
    _run(["busybox", "depmod", "-b", str(tree), version])
    modules_dir = tree / "lib" / "modules" / version
    files: dict[str, bytes | str | None] = {
        name: None for name in ("bin", "proc", "sys", "dev", "host", "rw", "newroot", "lib", "etc")
    }
    files["lib/modules"] = None
    files["boot-modules"] = None
    files["bin/busybox"] = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    files["init"] = INIT_SCRIPT.encode()
    order = []
    for relative in _module_order(modules_dir, BOOT_MODULES):
        name = Path(relative).name
        files[f"boot-modules/{name}"] = (modules_dir / relative).read_bytes()
        order.append(name)
    conf = f'BOOT_MODULES="{" ".join(order)}"\nMODULES_DIR="{tree / "lib" / "modules"}"\n'
    files["etc/guest.conf"] = conf.encode()
    vmlinuz = tree / "boot" / f"vmlinuz-{version}"
    tmp_vmlinux = image.vmlinux.with_suffix(".tmp")
    tmp_vmlinux.write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    image.initramfs.write_bytes(build_initramfs(files))
    tmp_vmlinux.rename(image.vmlinux)
    debs[0].unlink()  # 70 MB we no longer need: the tree holds what we use
    return image


# -- running ----------------------------------------------------------------------------
def qemu_argv(image: GuestImage, script: Path, memory_mb: int = 2048) -> list[str]:
    append = f"console=ttyS0 quiet loglevel=3 panic=-1 rbipsec.run={script}"
    return [
        QEMU,
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        str(max(1, min(4, os.cpu_count() or 1))),
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(image.vmlinux),
        "-initrd",
        str(image.initramfs),
        "-append",
        append,
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]


def run_in_guest(
    command: str, image: GuestImage | None = None, timeout: float = 1200.0
) -> GuestResult:
    """Boot, run `command` with /bin/sh in the repository, return its status and output."""
    image = image or build()
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    script = runs / f"run-{os.getpid()}-{time.monotonic_ns()}.sh"
    script.write_text(
        "export RBIPSEC_IN_GUEST=1 PYTHONDONTWRITEBYTECODE=1 HOME=/root\n"
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"cd {shlex.quote(str(REPO))} || exit 97\n"
        "ip link set lo up\n"
        f"{command}\n"
    )
    started = time.monotonic()
    try:
        done = subprocess.run(
            qemu_argv(image, script),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if exc.stdout else ""
        output = partial + f"\n[harness] guest killed after {timeout:.0f} s\n"
    finally:
        script.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    found = re.findall(rf"{EXIT_MARKER}(\d+)", output)
    status = int(found[-1]) if found else None
    return GuestResult(status, output.replace("\r\n", "\n"), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build")
    run = sub.add_parser("run")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    image = build()
    if args.action == "build":
        print(f"kernel {image.kernel_version}: {image.vmlinux} {image.initramfs}")
        return
    command = shlex.join(arg for arg in args.command if arg != "--")
    result = run_in_guest(command, image)
    print(result.output)
    print(f"[harness] exit status {result.exit_status} after {result.seconds:.1f} s")
    sys.exit(1 if result.exit_status is None else result.exit_status)


if __name__ == "__main__":
    main()

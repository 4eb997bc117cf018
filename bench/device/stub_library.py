"""A stand-in for a shared library: the same SONAME and exported (versioned) symbols, every function a trap.

For `ffmpeg_bundle.sh`: Debian's ffmpeg needs ~210 libraries (236 MB), most for codecs and filters the media
workload never uses (speech synthesis, SVG, AV1 encoders...), and the device tool carries 64 MiB. Those are
replaced by stand-ins that satisfy the loader (Debian links ffmpeg with BIND_NOW, so every symbol must
resolve at start); a stand-in that is called stops the program with SIGILL, which names the library to keep.

    python3 stub_library.py /usr/lib/x86_64-linux-gnu/libcodec2.so.1.0 OUT_DIR
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (binutils, gcc)")
    return found


def exported(library: Path) -> list[tuple[str, str, int, str, bool]]:
    """(name, type, size, version, default version?) of each symbol `library` defines."""
    listing = subprocess.run(
        [tool("nm"), "-D", "--defined-only", "-S", "--with-symbol-versions", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    symbols = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4:
            _, size, kind, symbol = parts
        elif len(parts) == 3:
            _, kind, symbol = parts
            size = "0"
        else:
            continue
        name, default, version = symbol, True, ""
        if "@@" in symbol:
            name, version = symbol.split("@@", 1)
        elif "@" in symbol:
            name, version = symbol.split("@", 1)
            default = False
        symbols.append((name, kind, int(size, 16), version, default))
    return symbols


def main() -> None:
    library, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dynamic = subprocess.run([tool("readelf"), "-d", str(library)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"\(SONAME\)\s+Library soname: \[(.+?)\]", dynamic)
    if found is None:
        raise SystemExit(f"{library} has no SONAME")
    source = ["#include <stddef.h>"]
    versions: dict[str, None] = {}
    unversioned = False
    for number, (name, kind, size, version, default) in enumerate(exported(library)):
        if kind == "A":  # a version's own marker symbol
            if version:
                versions.setdefault(version, None)
            continue
        local = f"s{number}"
        if kind in "TtWiI":
            source.append(f"void {local}(void) {{ __builtin_trap(); }}")
        else:  # data: room of the real object's size, so copy relocations still fit
            source.append(f"char {local}[{max(size, 8)}] __attribute__((aligned(16)));")
        if version:
            source.append(f'__asm__(".symver {local}, {name}{"@@" if default else "@"}{version}");')
            versions.setdefault(version, None)
        else:
            source.append(f'__asm__(".globl {name}\\n.set {name}, {local}");')
            unversioned = True
    script, previous = [], None
    for version in versions:
        body = "global: *;" if previous is None and unversioned else ""
        script.append(f"{version} {{ {body} }}" + (f" {previous};" if previous else ";"))
        previous = version
    out = out_dir / library.name
    (out_dir / f"{library.name}.c").write_text("\n".join(source) + "\n")
    command = [tool("gcc"), "-shared", "-fPIC", "-o", str(out), str(out_dir / f"{library.name}.c")]
    command.append(f"-Wl,-soname,{found.group(1)}")
    if script:
        (out_dir / f"{library.name}.map").write_text("\n".join(script) + "\n")
        command.append(f"-Wl,--version-script={out_dir / f'{library.name}.map'}")
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()

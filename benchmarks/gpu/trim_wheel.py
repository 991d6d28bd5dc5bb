"""Rewrites a bitsandbytes wheel in place with only the native libraries one machine needs.

A bitsandbytes wheel carries one native library per CUDA / ROCm / XPU version (about 43 MB compressed); the GPU machine
uses one of them (its torch is built for CUDA 13.0, so bitsandbytes loads `libbitsandbytes_cuda130.so`). Dropping
the others takes the wheel to a few MB. The wheel's RECORD is rewritten to match, so pip installs it as usual.

    python benchmarks/gpu/trim_wheel.py WHEEL --keep libbitsandbytes_cuda130.so libbitsandbytes_cpu.so
"""

import argparse
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

NATIVE_LIBRARY = re.compile(r"^bitsandbytes/libbitsandbytes_[^/]+\.(so|dll|dylib)$")


def trim(wheel: Path, keep: set[str]) -> list[str]:
    """Drops every native library of `wheel` not named in `keep`; returns the dropped paths."""
    with zipfile.ZipFile(wheel) as source:
        names = source.namelist()
        dropped = [name for name in names if NATIVE_LIBRARY.match(name) and Path(name).name not in keep]
        kept_libraries = [name for name in names if NATIVE_LIBRARY.match(name) and name not in dropped]
        missing = keep - {Path(name).name for name in kept_libraries}
        if missing:
            raise SystemExit(f"{wheel.name} has no {', '.join(sorted(missing))}")
        with tempfile.NamedTemporaryFile(dir=wheel.parent, suffix=".whl", delete=False) as handle:
            partial = Path(handle.name)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                if info.filename in dropped:
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
                target.writestr(info, data)
    shutil.move(partial, wheel)
    return dropped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--keep", nargs="+", required=True, help="file names of the native libraries to keep")
    args = parser.parse_args()
    before = args.wheel.stat().st_size
    dropped = trim(args.wheel, set(args.keep))
    print(f"{args.wheel.name}: dropped {len(dropped)} native libraries, kept {', '.join(args.keep)}; "
          f"{before / 2**20:.1f} MiB -> {args.wheel.stat().st_size / 2**20:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()

"""Build of the C parts: the wire layer as a static library, linked into the
binding layer, which is the extension module oneloop._core. The wire layer's
WebSocket compression uses the system zlib (zlib1g-dev); HTTP/2's framing,
HPACK and flow control come from the system libnghttp2 (libnghttp2-dev),
found with pkg-config.

Set ONELOOP_WERROR=1 to turn warnings into errors (CI does); it is off by
default so a newer compiler's new warning never breaks a user's install.
"""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup

STD = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-D_GNU_SOURCE"]
WARN = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wno-missing-field-initializers"]
if os.environ.get("ONELOOP_WERROR") == "1":
    WARN.append("-Werror")
OPT = ["-O2", "-fno-strict-aliasing"]

wire = (
    "olwire",
    {
        "sources": sorted(glob.glob("src/wire/*.c")),
        "include_dirs": ["src/wire"],
        "cflags": STD + WARN + OPT,
    },
)


def pkg_config(package: str, debian: str) -> tuple[list[str], list[str], list[str]]:
    """Include dirs, library dirs and libraries of a system package, or a
    message naming what to install."""
    if shutil.which("pkg-config") is None:
        sys.exit(f"oneloop: building needs pkg-config to find {package} (apt install pkg-config)")
    try:
        out = subprocess.run(
            ["pkg-config", "--cflags", "--libs", package],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    except subprocess.CalledProcessError:
        sys.exit(
            f"oneloop: building needs {package}, which pkg-config cannot find "
            f"(apt install {debian})"
        )
    return (
        [f[2:] for f in out if f.startswith("-I")],
        [f[2:] for f in out if f.startswith("-L")],
        [f[2:] for f in out if f.startswith("-l")],
    )


nghttp2_include, nghttp2_libdirs, nghttp2_libs = pkg_config("libnghttp2", "libnghttp2-dev")

core = Extension(
    "oneloop._core",
    sources=sorted(glob.glob("src/core/*.c")),
    include_dirs=["src/wire", "src/core", *nghttp2_include],
    library_dirs=nghttp2_libdirs,
    depends=sorted(glob.glob("src/core/*.h") + glob.glob("src/wire/*.h")),
    extra_compile_args=STD + WARN + OPT,
    libraries=["olwire", "z", *nghttp2_libs],
)

setup(libraries=[wire], ext_modules=[core])

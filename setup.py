"""Build of the C parts: the wire layer as a static library, linked into the
binding layer, which is the extension module oneloop._core. The wire layer's
WebSocket compression uses the system zlib (zlib1g-dev).

Set ONELOOP_WERROR=1 to turn warnings into errors (CI does); it is off by
default so a newer compiler's new warning never breaks a user's install.
"""

import glob
import os

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

core = Extension(
    "oneloop._core",
    sources=sorted(glob.glob("src/core/*.c")),
    include_dirs=["src/wire", "src/core"],
    depends=sorted(glob.glob("src/core/*.h") + glob.glob("src/wire/*.h")),
    extra_compile_args=STD + WARN + OPT,
    libraries=["olwire", "z"],
)

setup(libraries=[wire], ext_modules=[core])

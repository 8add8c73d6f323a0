"""The Autobahn TestSuite's WebSocket cases against oneloop.

kosoku (the suite's cases, 517 of them, permessage-deflate's 12.* and 13.*
included) drives oneloop serving tests/python/apps/ws_echo.py: every case
over TCP on uvloop; over TCP on asyncio and over TLS on uvloop, every case
but the 96 slowest compression ones (scripts/autobahn.py --quick: messages
of 64 KiB and more, and of 32 KiB and more in small fragments), which would
take some 7 minutes more each. scripts/autobahn.py starts the server, runs
kosoku and reads its reports; a case passes when its verdict is OK,
NON-STRICT or INFORMATIONAL and its closing handshake OK or INFORMATIONAL.
On a failure the assertion shows each failing case, expected against
observed; the reports stay in build/autobahn/.

ONELOOP_AUTOBAHN_FULL=1 runs every case in all three; ONELOOP_AUTOBAHN_CASES
(ids or globs, '1.*,9.7.*') runs just those, for a quick look.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "autobahn.py"
CASES = os.environ.get("ONELOOP_AUTOBAHN_CASES", "")
FULL = os.environ.get("ONELOOP_AUTOBAHN_FULL", "") not in ("", "0")
RUN_SECONDS = 1200  # a full run takes ~8 minutes on 2 cores; room for a slow machine


@pytest.mark.timeout(RUN_SECONDS + 60)
@pytest.mark.parametrize(
    ("loop", "tls", "every_case"),
    [("uvloop", False, True), ("asyncio", False, FULL), ("uvloop", True, FULL)],
    ids=["tcp-uvloop", "tcp-asyncio", "tls-uvloop"],
)
def test_autobahn_cases(loop: str, tls: bool, every_case: bool) -> None:
    argv = [sys.executable, str(SCRIPT), "--loop", loop, "--details"]
    argv += ["--timeout", str(RUN_SECONDS)]
    if tls:
        argv.append("--tls")
    if CASES:
        argv += ["--cases", CASES]
    elif not every_case:
        argv.append("--quick")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ", 0 failing" in proc.stdout, proc.stdout

"""Differential fuzzing of oneloop's request parser against llhttp and h11.

The same request bytes go through three parsers:

  oneloop  the wire layer, through oneloop._core.parse_request and
           decode_chunked (default limits: Host required in HTTP/1.1)
  llhttp   as httptools (PyPI) exposes it
  h11      (PyPI), as a server

and each gives, for the first message in the bytes, one outcome: "reject",
"incomplete" (wants more bytes), or "accept" with the method, target,
version, header fields (values without surrounding whitespace), body and
trailer fields. Inputs are mutations of well-formed requests (insert a
dictionary token or an interesting byte, delete, duplicate, splice), drawn
from a fixed seed, so a run is reproducible.

Every disagreement is put in a class: which parser differs, on what (accept
vs reject, or which field), and for a rejection oneloop's reason. A class
is either a bug or a deliberate strictness, listed with its RFC reason in
KNOWN below and in docs/architecture.md ("Where oneloop disagrees with
llhttp and h11"). The run prints each class with a count and its shortest
example; with --check it fails on a class not in KNOWN.

    python scripts/diff_fuzz.py [--seed N] [--inputs N | --seconds S] [--check] [-v]

Needs httptools and h11 (pip install httptools h11).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

import h11
import httptools

from oneloop import _core

OWS = b" \t"

# ---------------------------------------------------------------- parsers


def run_oneloop(data: bytes, head_only: bool = False):
    try:
        head = _core.parse_request(data)
    except ValueError as e:
        return ("reject", str(e))
    if head is None:
        return ("incomplete",)
    rest = data[head["head_length"] :]
    trailers: list = []
    if head_only:
        body = trailers = ANY_BODY
    elif head["framing"] == "length":
        n = head["content_length"]
        if len(rest) < n:
            return ("incomplete",)
        body = rest[:n]
    elif head["framing"] == "chunked":
        try:
            decoded = _core.decode_chunked(rest)
        except ValueError as e:
            return ("reject", str(e))
        if decoded is None:
            return ("incomplete",)
        body, _, trailers = decoded
    else:
        body = b""
    version = "{}.{}".format(*head["version"])
    fields = [(n.lower(), v) for n, v in head["headers"]]
    if head_only:
        return ("accept", head["method"], head["target"], version, fields, ANY_BODY, ANY_BODY)
    return ("accept", head["method"], head["target"], version, fields, body, _norm(trailers))


def _norm(fields):
    return [(bytes(n).lower(), bytes(v).strip(OWS)) for n, v in fields]


class _Sink:
    def __init__(self) -> None:
        self.parser = None
        self.method = self.version = None
        self.url = b""
        self.fields: list = []
        self.body = b""
        self.trailers: list = []
        self.in_body = False
        self.done = False
        self.name = b""

    # Only the first message counts: callbacks of a pipelined next one are
    # ignored (httptools reports them to the same object).
    def on_url(self, url: bytes) -> None:
        if not self.done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            (self.trailers if self.in_body else self.fields).append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        # now, not at the end: a next message would overwrite them
        self.method = self.parser.get_method()
        self.version = self.parser.get_http_version()
        self.in_body = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def run_llhttp(data: bytes):
    sink = _Sink()
    parser = httptools.HttpRequestParser(sink)
    sink.parser = parser
    upgrade = False
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        # An upgrade or CONNECT: llhttp stops after the head and leaves the
        # rest to the new protocol, so its body says nothing: ANY_BODY.
        upgrade = True
    except httptools.HttpParserError as e:
        if not sink.done:
            return ("reject", type(e).__name__ + ": " + str(e))
    if not sink.done and not (upgrade and sink.in_body):
        return ("incomplete",)
    # A head asking for an upgrade: what llhttp does with the bytes after it
    # (a body, or the new protocol) differs from case to case; compare heads.
    upgrade = upgrade or (sink.in_body and parser.should_upgrade())
    return (
        "accept",
        sink.method,
        sink.url,
        sink.version,
        _norm(sink.fields),
        ANY_BODY if upgrade else sink.body,
        ANY_BODY if upgrade else _norm(sink.trailers),
    )


ANY_BODY = object()


def run_h11(data: bytes):
    if not data:  # to h11, receive_data(b"") means the peer closed
        return ("incomplete",)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    req = None
    body = b""
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                if ev is h11.PAUSED and req is not None:
                    return _h11_accept(req, body, [])
                return ("incomplete",)
            if isinstance(ev, h11.ConnectionClosed):
                return ("incomplete",)
            if isinstance(ev, h11.Request):
                req = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return _h11_accept(req, body, ev.headers.raw_items())
    except h11.RemoteProtocolError as e:
        return ("reject", "h11: " + str(e))


def _h11_accept(req, body, trailers):
    return (
        "accept",
        req.method,
        req.target,
        req.http_version.decode(),
        _norm(req.headers.raw_items()),
        body,
        _norm(trailers),
    )


PARSERS = {"oneloop": run_oneloop, "llhttp": run_llhttp, "h11": run_h11}

# ---------------------------------------------------------------- inputs

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Y: z w\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"DELETE /r HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]

TOKENS = [
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b'"',
    b"\\",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\x0b",
    b"\x0c",
    b"\x07",
    b"#",
    b"?",
    b"/",
    b"*",
    b"@",
    b"[",
    b"]",
    b"0",
    b"1",
    b"9",
    b"a",
    b"f",
    b"-",
    b"+",
    b"_",
    b"%",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"Host: b\r\n",
    b"Content-Length: ",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: ",
    b"Transfer-Encoding: chunked\r\n",
    b"chunked",
    b"gzip, ",
    b"identity",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff",
    b"; ext",
    b" ;x=y",
    b"Trailer: x\r\n",
    b"CONNECT",
    b"OPTIONS",
    b"GET",
    b"HEAD",
    b"-X",
    b"a:1",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        n = len(data)
        pos = rng.randint(0, n)
        op = rng.random()
        if op < 0.35:
            data = data[:pos] + rng.choice(TOKENS) + data[pos:]
        elif op < 0.55 and n:
            end = min(n, pos + rng.choice((1, 1, 2, 3, 8)))
            data = data[:pos] + data[end:]
        elif op < 0.75 and n:
            pos = min(pos, n - 1)
            data = (
                data[:pos] + bytes([rng.choice(b'\r\n \t:;,="\x00\x7f\x80aA0-/')]) + data[pos + 1 :]
            )
        elif op < 0.85 and n:
            end = min(n, pos + rng.randint(1, 16))
            data = data[:end] + data[pos:end] + data[end:]
        else:
            other = rng.choice(SEEDS)
            cut = rng.randint(0, len(other))
            data = data[:pos] + other[cut:]
    return data


# ---------------------------------------------------------------- classes


def field_diff(a, b) -> str:
    names = ("outcome", "method", "target", "version", "headers", "body", "trailers")
    for i, name in enumerate(names):
        if i >= len(a) or i >= len(b):
            return name
        if a[i] is not ANY_BODY and b[i] is not ANY_BODY and a[i] != b[i]:
            return name
    return "same"


def reason(out) -> str:
    if out[0] != "reject":
        return out[0]
    text = out[1]
    if text[:3].isdigit():  # oneloop: "400 reason"
        return "reject:" + text[4:]
    # a peer's message, without the bytes some of them quote
    return "reject:" + text.split(":", 2)[1].split("(")[0].strip()


def classify(outs: dict) -> str | None:
    """A name for how the three outcomes differ, or None if they agree."""
    parts = []
    for other in ("llhttp", "h11"):
        o = outs[other]
        ol = outs["oneloop"]
        if o[0] == "accept" and o[5] is ANY_BODY:
            # llhttp gave the bytes after an upgrade head to the new
            # protocol: compare heads only
            ol = outs["oneloop-head"]
        # Both refuse, or neither has a whole message yet; or one refuses
        # bytes the other still waits to see the end of (h11 checks a line
        # only once it is complete, oneloop as soon as a byte proves it).
        if {ol[0], o[0]} <= {"reject", "incomplete"}:
            continue
        what = field_diff(ol, o)
        if what == "same":
            continue
        if ol[0] == "accept" and ol[3] == "0.9":
            # One class whatever the peer made of the bytes after the line:
            # oneloop reads none of them.
            parts.append(f"{other}:*/oneloop:accept[0.9]")
        elif what == "outcome":
            parts.append(f"{other}:{reason(o)}/oneloop:{reason(ol)}")
        else:
            parts.append(f"{other}:{what}")
    return " & ".join(parts) or None


# Classes seen and judged: each a deliberate strictness of oneloop (the RFC
# reason here and in docs/architecture.md) or a peer's leniency. A class
# name joins one part per peer that disagrees; each part must be here.
_09 = (
    "HTTP/0.9 (RFC 1945): GET SP target CRLF is a whole request, recognised "
    "so the server can answer 505 and close; no header lines follow it"
)
_LINE = "RFC 9112 2.2: lines end in CRLF; a bare LF is refused (smuggling)"
_SP = "RFC 9112 3: one SP between method, target and version"
_FORM = "RFC 9112 3.2: origin-, absolute-, authority- (CONNECT) or asterisk-form (OPTIONS)"
_EXT = "RFC 9112 7.1.1: chunk-ext is ';' name ['=' token/quoted-string], BWS only around ';' '='"
_SIZE = "RFC 9112 7.1: chunk-size is 1*HEXDIG then [ext] CRLF; nothing else"
_TE = "RFC 9112 6.1: chunked last and once, known codings, none in HTTP/1.0"
_VCHAR = (
    'tolerance: a target may hold any visible ASCII (" { | ...); the app decodes it, '
    "and it cannot change framing or routing"
)
_VERSION = "RFC 9110 6.2: only HTTP/1.x is served; 0.x and 2.0+ in HTTP/1 framing get 505"
_BWS = "RFC 9112 7.1.1: BWS (SP or HTAB) around ';' and '=' of chunk extensions is allowed"
_LIST = "RFC 9110 5.6.1: empty list elements (',chunked', 'chunked,') must be accepted"
KNOWN: dict[str, str] = {
    "llhttp:accept/oneloop:reject:missing or duplicate Host": (
        "RFC 9112 3.2: HTTP/1.1 without Host, or two Host fields: 400; llhttp leaves it to the app"
    ),
    "h11:accept/oneloop:reject:missing or duplicate Host": (
        "RFC 9110 2.5: HTTP/1.3 is served as 1.1, so it needs Host; h11 checks exactly 1.1"
    ),
    "llhttp:reject:Invalid method encountered/oneloop:accept": (
        "RFC 9110 9.1: any token is a method; llhttp has a fixed list"
    ),
    "llhttp:reject:Expected space after method/oneloop:accept": (
        "RFC 9110 9.1: any token is a method (GETa); llhttp has a fixed list"
    ),
    "llhttp:*/oneloop:accept[0.9]": _09 + "; llhttp reads header lines after it",
    "h11:*/oneloop:accept[0.9]": _09 + "; h11 does not know HTTP/0.9",
    "llhttp:reject:Invalid HTTP version/oneloop:accept": (
        "RFC 9110 2.5 and 6.2: HTTP/1.9 is served as 1.1; llhttp knows 1.0 and 1.1 only"
    ),
    "h11:reject:no request line received/oneloop:accept": (
        "RFC 9112 2.2: empty lines before the request line are skipped; h11 refuses them"
    ),
    "llhttp:reject:Unexpected char in url server/oneloop:accept": _VCHAR,
    "llhttp:reject:Unexpected char in url schema/oneloop:accept": (
        "RFC 3986 3.1: a scheme may hold digits, '+', '-', '.' after its first letter; " + _VCHAR
    ),
    "llhttp:reject:Invalid characters in url/oneloop:accept": _VCHAR,
    "llhttp:reject:Invalid character in chunk size/oneloop:accept": _BWS,
    "h11:reject:illegal chunk header/oneloop:accept": _BWS,
    "llhttp:reject:Invalid character in chunk extensions/oneloop:accept": _BWS,
    "llhttp:reject:Invalid character in chunk extensions name/oneloop:accept": _BWS,
    "llhttp:reject:Invalid character in chunk extensions value/oneloop:accept": _BWS,
    "h11:reject:Only Transfer-Encoding/oneloop:accept": _LIST,
    "llhttp:reject:Invalid `Transfer-Encoding` header value/oneloop:accept": _LIST,
    "llhttp:reject:Request has invalid `Transfer-Encoding`/oneloop:accept": (
        "RFC 9110 5.5: whitespace around a field value is not part of it (chunked<HTAB>)"
    ),
    "llhttp:accept/oneloop:reject:invalid HTTP version": "HTTP/0.9 had only GET (RFC 1945 4.1)",
    "llhttp:accept/oneloop:reject:line not terminated by CRLF": _LINE,
    "h11:accept/oneloop:reject:line not terminated by CRLF": _LINE,
    "llhttp:accept/oneloop:reject:invalid protocol": _SP,
    "llhttp:accept/oneloop:reject:invalid request target": _SP + "; " + _FORM,
    "h11:accept/oneloop:reject:invalid request target": _FORM + "; h11 takes any VCHAR run",
    "llhttp:accept/oneloop:reject:invalid chunk extension": _EXT,
    "h11:accept/oneloop:reject:invalid chunk extension": _EXT + "; h11 skips extensions unread",
    "llhttp:accept/oneloop:reject:invalid chunk size": _SIZE,
    "h11:accept/oneloop:reject:invalid chunk size": _SIZE + "; h11 allows trailing whitespace",
    "llhttp:accept/oneloop:reject:invalid Transfer-Encoding": _TE,
    "h11:accept/oneloop:reject:invalid Transfer-Encoding": _TE,
    "llhttp:accept/oneloop:reject:field not allowed in a trailer section": "RFC 9110 6.5.1",
    "h11:accept/oneloop:reject:field not allowed in a trailer section": "RFC 9110 6.5.1",
    "llhttp:accept/oneloop:reject:HTTP version not supported": _VERSION,
    "h11:accept/oneloop:reject:HTTP version not supported": _VERSION,
    "h11:accept/oneloop:reject:obsolete line folding": (
        "RFC 9112 5.2: a server may refuse obs-fold with 400; it does"
    ),
    "h11:accept/oneloop:reject:invalid Content-Length": (
        "RFC 9112 5.2 and 6.3: an obs-folded or otherwise malformed Content-Length is refused"
    ),
    "h11:accept/oneloop:reject:invalid character in header value": (
        "RFC 9110 5.5: DEL and controls other than HTAB are not field-vchar"
    ),
    "h11:accept/oneloop:reject:duplicate Content-Length": (
        "RFC 9112 6.3: even equal duplicates are refused (smuggling); h11 merges them"
    ),
    "h11:accept/oneloop:reject:both Content-Length and Transfer-Encoding": (
        "RFC 9112 6.1: ought to be handled as an error; refused (smuggling)"
    ),
}


def judged(cls: str) -> bool:
    return all(part in KNOWN for part in cls.split(" & "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--seconds", type=float, help="run this long instead of --inputs")
    ap.add_argument("--check", action="store_true", help="fail on a class not in KNOWN")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every outcome of examples")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    classes: dict[str, list] = defaultdict(lambda: [0, None, None])
    start = time.monotonic()
    n = 0
    while True:
        if args.seconds is not None:
            if time.monotonic() - start > args.seconds:
                break
        elif n >= args.inputs:
            break
        data = mutate(rng, rng.choice(SEEDS))
        n += 1
        outs = {name: run(data) for name, run in PARSERS.items()}
        outs["oneloop-head"] = run_oneloop(data, head_only=True)
        cls = classify(outs)
        if cls is None:
            continue
        entry = classes[cls]
        entry[0] += 1
        if entry[1] is None or len(data) < len(entry[1]):
            entry[1], entry[2] = data, outs

    elapsed = time.monotonic() - start
    print(f"{n} inputs in {elapsed:.0f} s (seed {args.seed}); {len(classes)} disagreement classes")
    unjudged = 0
    for cls, (count, example, outs) in sorted(classes.items(), key=lambda kv: -kv[1][0]):
        ok = judged(cls)
        unjudged += not ok
        print(f"{'  ' if ok else 'NEW'} {count:6}  {cls}")
        print(f"          {example!r}")
        if args.verbose or not ok:
            for name, out in outs.items():
                if name == "oneloop-head":
                    continue
                print(f"            {name:8} {out!r}"[:400])
    if args.check and unjudged:
        print(f"{unjudged} classes not judged (see KNOWN)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the tool does on a board, each step one raw-REPL round trip where it can be.

A few helper functions are sent once per connection (:data:`AGENT`); every later step calls them.
Files travel zlib-compressed (when the board has ``deflate``) and base64-encoded, many files per round
trip, so the bytes on the wire stay below the bytes deployed. Hashes come back for many files at once.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tools.flash.errors import EXIT_BOARD, FlashError


class Repl(Protocol):
    """What :class:`Board` needs from a connection (``tools.flash.transport.RawRepl``)."""

    port: str
    tx_bytes: int
    rx_bytes: int

    def exec(self, code: str | bytes, *, timeout: float | None = None, what: str = ...) -> bytes: ...

# Board-side helpers (MicroPython). Kept small: it is sent on every connection.
AGENT = """\
import os,sys,json,hashlib
try:
 import ubinascii as binascii
except ImportError:
 import binascii
try:
 import deflate,io
except ImportError:
 deflate=None
def _H(p):
 h=hashlib.sha256();b=bytearray(1024);m=memoryview(b)
 with open(p,'rb') as f:
  while 1:
   n=f.readinto(b)
   if not n:break
   h.update(m[:n])
 return binascii.hexlify(h.digest()).decode()
def _T(d,o,n=64):
 try:l=list(os.ilistdir(d))
 except OSError:
  try:o[d]=[os.stat(d)[6],_H(d)[:n]]
  except OSError:pass
  return
 for e in l:
  p=d+'/'+e[0]
  if e[1]==0x4000:_T(p,o,n)
  else:o[p]=[os.stat(p)[6],_H(p)[:n]]
def _S(ps):
 o={}
 for p in ps:_T(p,o)
 print(json.dumps(o))
def _V(ps):
 o={};h=hashlib.sha256()
 for p in ps:_T(p,o)
 for k in sorted(o):h.update('%s %d %s\\n'%(k,o[k][0],o[k][1]))
 print(json.dumps([len(o),binascii.hexlify(h.digest()).decode()]))
def _M(p):
 q=''
 for s in p.split('/')[1:-1]:
  q+='/'+s
  try:os.mkdir(q)
  except OSError:pass
def _W(p,d,z):
 b=binascii.a2b_base64(d)
 if z:b=deflate.DeflateIO(io.BytesIO(b),deflate.ZLIB).read()
 _M(p)
 with open(p,'wb') as f:f.write(b)
def _C(s,p):
 _M(p);b=bytearray(1024);m=memoryview(b)
 with open(s,'rb') as a:
  with open(p,'wb') as f:
   while 1:
    n=a.readinto(b)
    if not n:break
    f.write(m[:n])
def _R(p):
 try:l=list(os.ilistdir(p))
 except OSError:
  try:os.remove(p)
  except OSError:pass
  return
 for e in l:_R(p+'/'+e[0])
 try:os.rmdir(p)
 except OSError:pass
def _N(t,p):
 try:os.rename(t,p)
 except OSError:
  os.remove(p);os.rename(t,p)
def _J(p,s):
 with open(p+'.tmp','w') as f:f.write(s)
 _N(p+'.tmp',p)
def _P():
 i=sys.implementation;r={'impl':i.name,'ver':'.'.join(str(x) for x in i.version[:3]),
  'mpy':getattr(i,'_mpy',None),'machine':getattr(i,'_machine','?'),
  'sysname':sys.platform,'z':deflate is not None,'uid':None}
 try:
  import machine;r['uid']=binascii.hexlify(machine.unique_id()).decode()
 except Exception:pass
 for k,f in (('state','/boot.json'),('node','/node.json')):
  try:
   with open(f) as h:v=json.loads(h.read())
   if k=='node':v={'node_id':v.get('node_id'),'key_id':v.get('key_id'),'role':v.get('role')}
   r[k]=v
  except Exception:r[k]=None
 try:s=os.statvfs('/');r['free']=s[0]*s[3]
 except Exception:r['free']=None
 r['rom']=0
 try:
  import vfs
  if vfs.rom_ioctl(1)>0:
   m=vfs.rom_ioctl(2,0);r['rom']=0 if isinstance(m,int) else len(m)
 except Exception:pass
 return r
"""

FIXED_ROOTS = ("/boot.py", "/main.py", "/lib/bootmgr.py", "/lib/bootmgr.mpy", "/lib/board.py", "/lib/board.mpy",
               "/lib/safe")
PROBE_HASH = 16  # hex digits of each file's SHA-256 in a probe: enough to decide what to send
CHUNK = 6 * 1024  # base64 characters per round trip: what a small board compiles comfortably at once


@dataclass
class BoardInfo:
    """What a board said about itself in one round trip (file hashes: the first PROBE_HASH hex digits)."""

    port: str
    impl: str
    micropython: str
    mpy: int | None
    machine: str
    sysname: str
    uid: str | None
    deflate: bool
    state: dict[str, Any] | None
    node: dict[str, Any] | None
    free: int | None
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    rom: int = 0  # bytes of the ROM partition (a ROMFS-enabled MicroPython), 0 without one

    def as_dict(self) -> dict[str, Any]:
        return {"port": self.port, "micropython": self.micropython, "mpy": self.mpy, "machine": self.machine,
                "sysname": self.sysname, "chip_id": self.uid, "state": self.state, "node": self.node,
                "free": self.free}


@functools.lru_cache(maxsize=1024)
def _compressed(data: bytes) -> bytes:
    """zlib stream with a 1 KiB window (what a small board can afford); cached: a batch sends the same files."""
    c = zlib.compressobj(9, zlib.DEFLATED, 10)
    return c.compress(data) + c.flush()


def _lit(s: str) -> str:
    return repr(s)


class Board:
    """A board reached through its raw REPL, with the helper functions loaded."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl
        self.port = repl.port
        self._agent = False

    def _ensure_agent(self) -> None:
        if not self._agent:
            self.repl.exec(AGENT, what="loading the tool's helpers")
            self._agent = True

    def reset_agent(self) -> None:
        """The board was reset: the helpers must be sent again."""
        self._agent = False

    def call_json(self, code: str, *, what: str, timeout: float | None = None) -> Any:
        """Run ``code`` (which prints one JSON value last) and return that value."""
        self._ensure_agent()
        out = self.repl.exec(code, what=what, timeout=timeout).decode(errors="replace").strip()
        try:
            return json.loads(out.splitlines()[-1]) if out else None
        except (ValueError, IndexError):
            raise FlashError(f"unexpected answer from the board while {what}: {out[-200:]!r}", port=self.port,
                             exit_code=EXIT_BOARD, hint="run again; if it persists, erase the board") from None

    def probe(self, roots: Iterable[str] = ()) -> BoardInfo:
        """Board identity, boot state, provisioning (without key) and hashes under ``roots``: one round trip."""
        roots = list(roots)
        got = self.call_json(f"r=_P();o={{}}\nfor p in {roots!r}:_T(p,o,{PROBE_HASH})\n"
                             "r['files']=o;print(json.dumps(r))", what="asking what it runs", timeout=30)
        return BoardInfo(
            port=self.port, impl=got["impl"], micropython=got["ver"], mpy=got["mpy"], machine=got["machine"],
            sysname=got["sysname"], uid=got["uid"], deflate=bool(got["z"]), state=got["state"], node=got["node"],
            free=got["free"], files={p: (v[0], v[1]) for p, v in got["files"].items()}, rom=int(got.get("rom") or 0),
        )

    def digest(self, roots: Iterable[str]) -> tuple[int, str]:
        """(number of files, SHA-256 over "path size sha256" lines) under ``roots``: one short answer."""
        got = self.call_json(f"_V({list(roots)!r})", what="verifying files", timeout=30)
        return int(got[0]), str(got[1])

    def hashes(self, roots: Iterable[str]) -> dict[str, tuple[int, str]]:
        got = self.call_json(f"_S({list(roots)!r})", what="hashing files", timeout=30)
        return {p: (v[0], v[1]) for p, v in got.items()}

    def write_files(self, files: Mapping[str, bytes], *, compress: bool,
                    progress: Any = None) -> None:
        """Write ``files`` (board path → bytes), several per round trip."""
        batch: list[str] = []
        size = 0
        done = 0

        def flush() -> None:
            nonlocal batch, size
            if batch:
                self._ensure_agent()
                self.repl.exec("\n".join(batch), what="writing files", timeout=60)
                batch, size = [], 0

        for path, data in files.items():
            z = _compressed(data) if compress else data
            use_z = len(z) < len(data)
            payload = base64.b64encode(z if use_z else data).decode()
            for part, stmt in self._split(path, payload, use_z):
                if size + len(part) > CHUNK:
                    flush()
                batch.append(stmt)
                size += len(part)
            done += len(data)
            if progress:
                progress(done)
        flush()

    @staticmethod
    def _split(path: str, payload: str, z: bool) -> list[tuple[str, str]]:
        if len(payload) <= CHUNK or z:
            # compressed files go whole (the stream must be decompressed at once); they are small
            return [(payload, f"_W({_lit(path)},b'{payload}',{int(z)})")]
        # a big uncompressed file: first part creates the file, the others append
        parts = []
        step = CHUNK - CHUNK % 4
        for i in range(0, len(payload), step):
            chunk = payload[i : i + step]
            if i == 0:
                parts.append((chunk, f"_W({_lit(path)},b'{chunk}',0)"))
            else:
                parts.append((chunk, f"f=open({_lit(path)},'ab');f.write(binascii.a2b_base64(b'{chunk}'));f.close()"))
        return parts

    def run(self, code: str, *, what: str, timeout: float | None = None) -> bytes:
        self._ensure_agent()
        return self.repl.exec(code, what=what, timeout=timeout)

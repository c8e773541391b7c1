// Run MicroPython code on the real MicroPython WebAssembly VM and report what happened.
//
// One-shot mode (default): reads one JSON request from stdin
//   {"code": str, "mounts": [[host_dir, vm_dir], ...], "heapsize": int}
// copies each host directory into the VM's filesystem, runs the code (top-level await allowed),
// streams the VM's stdout/stderr to ours, and exits 0 on success, with SystemExit's code, or 1 after
// printing the Python traceback to stderr.
//
// Session mode (--session [--romfs IMAGE]): the same request shape, one per line, many times; each answer is
// one JSON line {"ok": bool, "out": str, "err": str, "exit": int} on stdout. The VM and its files persist, so
// a test suite pays the VM start-up once. --romfs gives the VM a ROM partition holding IMAGE (a ROMFS image,
// mounted at /rom by MicroPython itself; its .mpy files run in place, outside the heap, as on a board).
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function findPackage() {
  // node_modules at the project root (two levels above hil_tests/emulator/js) or wherever Node resolves it
  const local = path.resolve(here, '../../../node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs');
  if (fs.existsSync(local)) return local;
  return require.resolve('@micropython/micropython-webassembly-pyscript/micropython.mjs');
}

const { loadMicroPython } = await import(findPackage());

function copyInto(mp, hostDir, vmDir) {
  mkdirs(mp, vmDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    if (entry.name === '__pycache__' || entry.name.startsWith('.')) continue;
    const src = path.join(hostDir, entry.name);
    const dst = vmDir.replace(/\/$/, '') + '/' + entry.name;
    if (entry.isDirectory()) copyInto(mp, src, dst);
    else mp.FS.writeFile(dst, fs.readFileSync(src));
  }
}

function mkdirs(mp, vmDir) {
  let cur = '';
  for (const part of vmDir.split('/').filter(Boolean)) {
    cur += '/' + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

const PRELUDE = `
import sys
if '/lib' not in sys.path:
    sys.path.append('/lib')
`;

function exitCodeOf(err) {
  const text = String(err && err.message ? err.message : err);
  const m = text.match(/SystemExit:? ?(-?\d+)?/);
  if (m) return { code: m[1] === undefined ? 0 : parseInt(m[1], 10), text };
  return { code: 1, text };
}

async function oneShot() {
  const req = JSON.parse(fs.readFileSync(0, 'utf8'));
  const mp = await loadMicroPython({
    heapsize: req.heapsize || 1024 * 1024,
    stdout: (line) => process.stdout.write(line + '\n'),
    stderr: (line) => process.stderr.write(line + '\n'),
    linebuffer: true,
  });
  for (const [host, vm] of req.mounts || []) copyInto(mp, host, vm);
  mp.runPython(PRELUDE);
  try {
    await mp.runPythonAsync(req.code);
    process.exitCode = 0;
  } catch (err) {
    const { code, text } = exitCodeOf(err);
    if (code !== 0 && !/SystemExit/.test(text)) process.stderr.write(text.endsWith('\n') ? text : text + '\n');
    process.exitCode = code;
  }
}

async function session() {
  let out = [];
  let err = [];
  const romArg = process.argv.indexOf('--romfs');
  const mp = await loadMicroPython({
    heapsize: 4 * 1024 * 1024,
    romfs: romArg > 0 ? new Uint8Array(fs.readFileSync(process.argv[romArg + 1])) : undefined,
    stdout: (line) => out.push(line),
    stderr: (line) => err.push(line),
    linebuffer: true,
  });
  mp.runPython(PRELUDE);
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    out = []; err = [];
    let ok = true; let exit = 0;
    try {
      for (const [host, vm] of req.mounts || []) copyInto(mp, host, vm);
      await mp.runPythonAsync(req.code);
    } catch (e) {
      const r = exitCodeOf(e);
      exit = r.code; ok = exit === 0;
      if (!ok && !/SystemExit/.test(r.text)) err.push(r.text);
    }
    process.stdout.write(JSON.stringify({ ok, exit, out: out.join('\n'), err: err.join('\n') }) + '\n');
  }
}

if (process.argv.includes('--session')) await session();
else await oneShot();

// One emulated board: the MicroPython WebAssembly VM, its REPL state machine, its clock and its peripherals.
//
// Runs in a worker thread of host.mjs (one worker per board, several boards per Node process). The host
// thread owns the pseudo-terminals; REPL input arrives through a shared ring buffer (so blocking reads,
// time.sleep and Ctrl-C work while Python runs), output and link bytes leave by postMessage.
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { deviceClasses } from './devices.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const MPY_DIR = path.resolve(here, '../mpy');
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
const realDateNow = Date.now;
const realSetImmediate = globalThis.setImmediate;

const cfg = workerData;
// Ctrl-C while Python code runs: the VM calls out through Emscripten's invoke_* helpers on most function
// calls; every 1024th call looks for a Ctrl-C in the input ring and schedules KeyboardInterrupt, as a
// board's UART interrupt does. (A loop that calls nothing is caught by the host's hung-board respawn.)
let vmExports = null;
let invokeCalls = 0;
const wrapped = new WeakSet();
function wrapInvokes(imports) {
  for (const ns of Object.values(imports || {})) {
    if (!ns || typeof ns !== 'object' || wrapped.has(ns)) continue;
    wrapped.add(ns);
    for (const k of Object.keys(ns)) {
      if (!k.startsWith('invoke_') || typeof ns[k] !== 'function') continue;
      const f = ns[k];
      ns[k] = (a, b, c, d, e, g, h) => {
        if ((++invokeCalls & 1023) === 0) pollCtrlC();
        return f(a, b, c, d, e, g, h);
      };
    }
  }
}
// Only a program that has run for a while is interrupted this way: a Ctrl-C queued behind a short command
// is left to the REPL, and no KeyboardInterrupt stays pending for whatever Python runs next.
let busySince = 0;
let kbdScheduled = false;
function busy(fn) {
  const outer = busySince;
  if (!outer) busySince = realDateNow();
  try { return fn(); } finally {
    if (!outer) {
      busySince = 0;
      if (kbdScheduled) {
        kbdScheduled = false;
        // firmware (or the port's asyncio) may swallow the KeyboardInterrupt: the Ctrl-C still ends the program
        queueMicrotask(() => {
          if (mode === 'app' || mode === 'running') endProgram('Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n');
        });
      }
    }
  }
}
function pollCtrlC() {
  if (binaryStdout || !vmExports || mode === 'boot' || !busySince || realDateNow() - busySince < 50) return;
  if (!peekHasCtrlC()) return;
  consumeThroughCtrlC();
  kbdScheduled = true;
  vmExports.mp_sched_keyboard_interrupt();
}
{
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = async (source, imports) => {
    wrapInvokes(imports);
    let result;
    // the host compiled micropython.wasm once for all its boards: no compile at each boot and soft reset
    if (source instanceof WebAssembly.Module) result = { module: source, instance: await instantiate(source, imports) };
    else if (cfg.wasmModule) result = { module: cfg.wasmModule, instance: await instantiate(cfg.wasmModule, imports) };
    else result = await instantiate(source, imports);
    vmExports = result.instance.exports;
    return result;
  };
}
const { loadMicroPython } = await import(cfg.micropython);
// device models other areas add (js/devices/<chip>.mjs call registerDevice when imported)
const pluginDir = path.join(here, 'devices');
if (fs.existsSync(pluginDir)) {
  for (const f of fs.readdirSync(pluginDir).sort()) if (f.endsWith('.mjs')) await import(path.join(pluginDir, f));
}

// ---- shared input ring (written by the host thread) --------------------------------------------------
// ctl[0] = write count, ctl[1] = read count, ctl[2] = horizon generation (virtual time), ctl[3] = busy flag
const ctl = new Int32Array(cfg.ctlSab);
const ring = new Uint8Array(cfg.ringSab);
const horizon = new Float64Array(cfg.horizonSab); // [0] = virtual time the host allows (ms since epoch)
const RING = ring.length;
function inputAvailable() { return Atomics.load(ctl, 0) - Atomics.load(ctl, 1); }
function readByte() {
  const r = Atomics.load(ctl, 1);
  const b = ring[r % RING];
  Atomics.store(ctl, 1, r + 1);
  return b;
}
function peekHasCtrlC() {
  const w = Atomics.load(ctl, 0);
  for (let r = Atomics.load(ctl, 1); r < w; r++) if (ring[r % RING] === 3) return true;
  return false;
}
function consumeThroughCtrlC() {
  while (inputAvailable() > 0) if (readByte() === 3) return;
}

// ---- clock: real time, or virtual time advanced by the host ------------------------------------------
class Clock {
  constructor(virtual, start) {
    this.virtual = virtual;
    this.t = start ?? realDateNow();
    this.timers = new Map(); // id -> {due, fn, args}
    this.nextId = 1;
    this.realTimers = new Map();
  }
  now() { return this.virtual ? this.t : realDateNow(); }
  setTimeout(fn, ms, ...args) {
    const id = this.nextId++;
    ms = Math.max(0, Number(ms) || 0);
    if (this.virtual) {
      this.timers.set(id, { due: this.t + ms, fn, args, seq: id });
      if (this.t + ms <= horizon[0]) scheduleRun();
    } else {
      const h = realSetTimeout(() => { this.realTimers.delete(id); runTimer(fn, args); }, ms);
      this.realTimers.set(id, h);
    }
    return id;
  }
  clearTimeout(id) {
    if (this.virtual) this.timers.delete(id);
    else { const h = this.realTimers.get(id); if (h !== undefined) { realClearTimeout(h); this.realTimers.delete(id); } }
  }
  clearAll() {
    this.timers.clear();
    for (const h of this.realTimers.values()) realClearTimeout(h);
    this.realTimers.clear();
  }
  nextDue() {
    let best = null;
    for (const [id, t] of this.timers) if (!best || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = { id, ...t };
    return best;
  }
}
const clock = new Clock(!!cfg.virtualTime, cfg.startTimeMs);

// Everything in this thread (the VM's asyncio, Emscripten, device models) sees the board's clock.
globalThis.setTimeout = (fn, ms, ...a) => clock.setTimeout(fn, ms, ...a);
globalThis.clearTimeout = (id) => clock.clearTimeout(id);
Date.now = () => Math.floor(clock.now());

// Virtual time: run the timers that are due up to the horizon the host granted, in order, one JS task each.
let running = false;
let runScheduled = false;
function scheduleRun() {
  if (runScheduled || !clock.virtual) return;
  runScheduled = true;
  realSetImmediate(runVirtual);
}
let fired = 0;
let lastYield = 0;
async function runVirtual() {
  runScheduled = false;
  if (running) return;
  running = true;
  try {
    for (;;) {
      const limit = horizon[0];
      const next = clock.nextDue();
      if (!next || next.due > limit) { clock.t = Math.max(clock.t, limit); break; }
      clock.timers.delete(next.id);
      clock.t = Math.max(clock.t, next.due);
      runTimer(next.fn, next.args);
      // promises settle between timers; host messages (UART bytes, control) get a turn every few ms
      if (++fired % 64 === 0 || realDateNow() - lastYield > 5) {
        await new Promise((r) => realSetImmediate(r));
        lastYield = realDateNow();
      } else await Promise.resolve();
    }
  } finally { running = false; }
  answerAdvances();
}
const pendingAdvances = [];
function answerAdvances() {
  while (pendingAdvances.length && clock.t >= pendingAdvances[0].target) {
    const a = pendingAdvances.shift();
    reply(a.id, true, { now_ms: clock.t });
  }
}

// ---- output to the host thread -------------------------------------------------------------------------
let outBuf = [];
let outScheduled = false;
let suppressOut = 0; // bytes to swallow (the VM's own "OK" when the host runs raw-paste code)
let muted = false;
let binaryStdout = false; // set by micropython.kbd_intr(-1): mpremote's mount protocol is binary
function flushOut() {
  outScheduled = false;
  if (outBuf.length) { parentPort.postMessage({ type: 'out', data: Uint8Array.from(outBuf) }); outBuf = []; }
}
function emitByte(c) {
  if (muted) return;
  if (suppressOut > 0) { suppressOut--; return; }
  outBuf.push(c);
  if (c === 10 || outBuf.length >= 512) flushOut();
  else if (!outScheduled) { outScheduled = true; queueMicrotask(flushOut); }
}
function emit(text) { for (const c of Buffer.from(text, 'latin1')) emitByte(c); }
function emitErr(text) { parentPort.postMessage({ type: 'log', text }); }

// ---- pins, PWM, ADC, traces --------------------------------------------------------------------------
const TRACE_MAX = 20000;
class PinBank {
  constructor() { this.vals = new Map(); this.modes = new Map(); this.ext = new Map(); this.irqs = new Map(); this.traces = new Map(); }
  value(pin) { return this.ext.has(pin) && this.modes.get(pin) !== 'out' ? this.ext.get(pin) : (this.vals.get(pin) ?? 0); }
  trace(pin, entry) {
    let t = this.traces.get(pin);
    if (!t) { t = []; this.traces.set(pin, t); }
    t.push(entry);
    if (t.length > TRACE_MAX) t.splice(0, t.length - TRACE_MAX);
  }
  setMode(pin, mode) { this.modes.set(pin, mode); }
  write(pin, v) { // firmware drives an output
    v = v ? 1 : 0;
    if (this.vals.get(pin) !== v) { this.vals.set(pin, v); this.trace(pin, [clock.now(), v]); }
  }
  drive(pin, v) { // the outside world drives an input
    const old = this.value(pin);
    this.ext.set(pin, v ? 1 : 0);
    const now = this.value(pin);
    if (old !== now) fireIrq(pin, now);
  }
  reset() { this.vals.clear(); this.modes.clear(); this.irqs.clear(); }
}
const pins = new PinBank();
const pwm = new Map(); // pin -> {freq, duty}
const adcSources = new Map();
const devices = new Map();
const i2cBuses = new Map(); // bus id -> Map(addr -> device)

const board = {
  clock, pins, pwm, adcSources, devices,
  pwmDuty(pin) { const p = pwm.get(pin); if (p) return p.duty / 65535; return pins.value(pin) ? 1 : 0; },
};
for (const d of cfg.devices || []) {
  const cls = deviceClasses.get(d.kind);
  if (!cls) throw new Error(`unknown device kind ${d.kind}`);
  const dev = new cls(board, d);
  devices.set(dev.name, dev);
  if (dev.address !== undefined) {
    if (!i2cBuses.has(dev.bus)) i2cBuses.set(dev.bus, new Map());
    i2cBuses.get(dev.bus).set(dev.address, dev);
  }
}

// Callback into Python (set by the firmware-side glue at each boot): kind, a, b
let pyEvent = null;
function fireIrq(pin, value) {
  const irq = pins.irqs.get(pin);
  if (!irq || !pyEvent) return;
  const rising = value === 1;
  if ((rising && irq.trigger & 2) || (!rising && irq.trigger & 1)) callPy('pin', pin, value);
}
function callPy(kind, a, b) {
  if (!pyEvent) return;
  try { pyEvent(kind, a, b); } catch (e) { emit(`\r\n${e.message || e}\r\n`); }
  flushOut();
}

// ---- watchdog ---------------------------------------------------------------------------------------
let wdt = null; // {timeout, timer}
function wdtFeed() {
  if (!wdt) return;
  if (wdt.timer) clock.clearTimeout(wdt.timer);
  wdt.timer = clock.setTimeout(() => hardReset('wdt'), wdt.timeout);
  if (!clock.virtual) horizon[1] = realDateNow() + wdt.timeout; // the host thread resets a hung board
}

// ---- the host thread asks for a hard reset (machine.reset, WDT, deep sleep) -----------------------------
let resetting = false;
function hardReset(cause, extra = {}) {
  if (resetting) return;
  resetting = true;
  flushOut();
  parentPort.postMessage({ type: 'reset', cause, ...extra });
}

// ---- ROM partition (ROMFS): a host file beside the flash folder, the whole partition byte for byte -------
// The VM gets a copy at every (re)start, so /rom is what the partition held at boot. Writes through
// vfs.rom_ioctl (the glue's shim) go straight to the host file, as to flash: a power cut keeps what was
// written; the VM sees the new content only after the next reset (a real board remaps at once).
const ROM_BLOCK = 4096;
function romPartition() {
  const size = cfg.romSize || 0;
  if (!size) return undefined;
  const part = new Uint8Array(size).fill(0xff); // erased flash
  try {
    const data = fs.readFileSync(cfg.romImage);
    part.set(data.subarray(0, size));
  } catch (e) { /* never written: an erased partition, nothing mounted */ }
  return part;
}
function romFile() {
  if (!fs.existsSync(cfg.romImage)) fs.writeFileSync(cfg.romImage, new Uint8Array(cfg.romSize).fill(0xff));
  return fs.openSync(cfg.romImage, 'r+');
}
function romInRange(offset, length) {
  return Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0
    && offset + length <= (cfg.romSize || 0);
}
function romErase(offset, length) { // whole blocks, as a flash erase
  const start = Math.floor(offset / ROM_BLOCK) * ROM_BLOCK;
  const end = Math.min(Math.ceil((offset + length) / ROM_BLOCK) * ROM_BLOCK, cfg.romSize);
  if (!romInRange(offset, length)) return -22;
  const fd = romFile();
  try { fs.writeSync(fd, new Uint8Array(end - start).fill(0xff), 0, end - start, start); } finally { fs.closeSync(fd); }
  return 0;
}
function romWrite(offset, hex) {
  const data = Buffer.from(String(hex), 'hex');
  if (!romInRange(offset, data.length)) return -22;
  const fd = romFile();
  try { fs.writeSync(fd, data, 0, data.length, offset); } finally { fs.closeSync(fd); }
  return 0;
}

// ---- filesystem: /flash mirrors the host folder, written through on close -------------------------------
function copyIn(FS, hostDir, vmDir) {
  try { FS.mkdir(vmDir); } catch (e) { /* exists */ }
  for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const src = path.join(hostDir, ent.name);
    const dst = `${vmDir}/${ent.name}`;
    if (ent.isDirectory()) copyIn(FS, src, dst);
    else if (ent.isFile()) FS.writeFile(dst, fs.readFileSync(src));
  }
}
let vmCwd = () => '/';
function hostPath(vmPath) {
  // the port's VfsPosix passes some paths relative to its root (rmdir): resolve them as Emscripten does
  const p = path.posix.normalize(vmPath.startsWith('/') ? vmPath : `${vmCwd()}/${vmPath}`);
  if (p !== '/flash' && !p.startsWith('/flash/')) return null;
  return path.join(cfg.flashDir, p.slice('/flash'.length));
}
function hookFs(FS) {
  const { close, mkdir, rmdir, unlink, rename } = FS;
  vmCwd = () => FS.cwd();
  // the host copy changes only after the VM's own operation succeeded; a host error is logged, never fatal
  const mirror = (what, fn) => { try { fn(); } catch (e) { emitErr(`flash write-through (${what}): ${e.message}`); } };
  FS.close = function (stream) {
    const r = close.apply(this, arguments);
    const hp = stream && stream.path && hostPath(stream.path);
    if (hp && (stream.flags & 3) && FS.isFile(stream.node.mode)) {
      mirror('close', () => {
        const data = FS.readFile(stream.path);
        const tmp = `${hp}.~wt`;
        fs.writeFileSync(tmp, data);
        fs.renameSync(tmp, hp);
      });
    }
    return r;
  };
  FS.mkdir = function (p) {
    const r = mkdir.apply(this, arguments);
    const hp = hostPath(p); if (hp) mirror('mkdir', () => { if (!fs.existsSync(hp)) fs.mkdirSync(hp); });
    return r;
  };
  FS.rmdir = function (p) {
    const r = rmdir.apply(this, arguments);
    const hp = hostPath(p); if (hp) mirror('rmdir', () => fs.rmSync(hp, { recursive: true, force: true }));
    return r;
  };
  FS.unlink = function (p) {
    const r = unlink.apply(this, arguments);
    const hp = hostPath(p); if (hp) mirror('unlink', () => fs.rmSync(hp, { force: true }));
    return r;
  };
  FS.rename = function (a, b) {
    const r = rename.apply(this, arguments);
    const ha = hostPath(a); const hb = hostPath(b);
    if (ha && hb && ha !== hb) {
      mirror('rename', () => {
        // a file never closed exists only in RAM: renaming it moves nothing on the flash. A file replaces
        // a file in one step, as on littlefs (a host reader never finds it missing); a directory is cleared
        if (!fs.existsSync(ha)) return;
        if (fs.existsSync(hb) && fs.statSync(hb).isDirectory()) fs.rmSync(hb, { recursive: true, force: true });
        fs.renameSync(ha, hb);
      });
    }
    return r;
  };
}

// ---- the hardware API the firmware-side glue (mpy/_emu.py, mpy/machine.py) calls --------------------------
const uartRx = new Map(); // uart id -> true once opened (bytes go straight to Python)
const hwApi = {
  board_id: cfg.boardId,
  unique_id: Uint8Array.from(cfg.uniqueId),
  reset_cause: cfg.resetCause,
  reset_reason: cfg.resetReason,
  virtual_time: !!cfg.virtualTime,
  pins_json: JSON.stringify(cfg.pins || {}),
  set_callback(fn) { pyEvent = fn; },
  // JS integers cross into MicroPython as 32-bit: large values travel as decimal strings
  now_ms() { return String(Math.floor(clock.now())); },
  // sleep that costs no CPU; returns 1 if Ctrl-C arrived (the caller raises KeyboardInterrupt)
  sleep_ms(ms) {
    flushOut();
    const end = clock.now() + Number(ms);
    if (clock.virtual) {
      while (horizon[0] < end) {
        if (peekHasCtrlC()) { consumeThroughCtrlC(); return 1; }
        if (resetting) return 0;
        Atomics.wait(ctl, 2, Atomics.load(ctl, 2), 50);
      }
      clock.t = Math.max(clock.t, end);
      if (peekHasCtrlC()) { consumeThroughCtrlC(); return 1; }
      return 0;
    }
    for (;;) {
      if (peekHasCtrlC()) { consumeThroughCtrlC(); return 1; }
      const left = end - realDateNow();
      if (left <= 0) return 0;
      Atomics.wait(ctl, 0, Atomics.load(ctl, 0), Math.min(left, 50));
    }
  },
  fs_rename(a, b) {
    try { mp.FS.rename(a, b); return 0; } catch (e) { return e && e.errno ? e.errno : 28; }
  },
  set_binary_stdout(on) { binaryStdout = !!on; },
  pin_mode(pin, mode) { pins.setMode(pin, mode); },
  pin_write(pin, v) { pins.write(pin, v); },
  pin_read(pin) { return pins.value(pin); },
  pin_irq(pin, trigger) { if (trigger) pins.irqs.set(pin, { trigger }); else pins.irqs.delete(pin); },
  pwm_set(pin, freq, duty) {
    const old = pwm.get(pin);
    if (old && old.freq === freq && old.duty === duty) return;
    pwm.set(pin, { freq, duty });
    pins.trace(pin, [clock.now(), duty / 65535, freq]);
  },
  pwm_deinit(pin) { if (pwm.delete(pin)) pins.trace(pin, [clock.now(), 0, 0]); },
  adc_read_uv(pin) {
    const src = adcSources.get(pin);
    const v = src ? src.pinVolts() : 0;
    return Math.round(Math.max(0, Math.min(v, 3.3)) * 1e6);
  },
  // I2C: write then read in one call; returns null on NACK (the glue raises OSError(ENODEV))
  i2c_xfer(bus, addr, wdata, nread) {
    const dev = (i2cBuses.get(bus) || new Map()).get(addr);
    if (!dev || !dev.attached) return null;
    dev.tick(clock.now());
    const w = wdata ? Uint8Array.from(wdata) : null; // a Python bytes proxy has no .length
    if (w && w.length) { if (!dev.i2cWrite(w)) return null; }
    if (nread > 0) return dev.i2cRead(nread);
    return new Uint8Array(0);
  },
  i2c_scan(bus) { return JSON.stringify([...(i2cBuses.get(bus) || new Map()).entries()].filter(([, d]) => d.attached).map(([a]) => a).sort((a, b) => a - b)); },
  uart_open(id) { uartRx.set(id, true); },
  uart_write(id, data) {
    const bytes = Uint8Array.from(data);
    if (id === cfg.replUart) { for (const c of bytes) emitByte(c); return bytes.length; }
    parentPort.postMessage({ type: 'uart', uart: id, data: bytes });
    return bytes.length;
  },
  timer_start(ms, periodic, key) {
    const fire = () => {
      if (periodic) t.id = clock.setTimeout(fire, ms);
      callPy('timer', key, 0);
    };
    const t = { id: clock.setTimeout(fire, ms) };
    timers.set(key, t);
  },
  timer_stop(key) { const t = timers.get(key); if (t) { clock.clearTimeout(t.id); timers.delete(key); } },
  wdt_start(ms) { if (!wdt) wdt = { timeout: Number(ms), timer: null }; wdtFeed(); },
  wdt_feed() { wdtFeed(); },
  reset() { hardReset('hard'); },
  deepsleep(ms) { hardReset('deepsleep', { sleep_ms: Number(ms), now_ms: clock.now() }); },
  rom_size: cfg.romSize || 0,
  rom_block: ROM_BLOCK,
  rom_erase(offset, length) { return romErase(Number(offset), Number(length)); },
  rom_write(offset, hex) { return romWrite(Number(offset), hex); },
  set_rtc_offset(ms) { rtcOffsetMs = Number(ms); parentPort.postMessage({ type: 'rtc', ms: rtcOffsetMs }); },
  get_rtc_offset() { return String(rtcOffsetMs); },
};
let rtcOffsetMs = cfg.rtcOffsetMs || 0; // survives a soft reset here, other resets but power-on in the host
const timers = new Map();

// ---- the VM and the REPL state machine ---------------------------------------------------------------
const glueCache = new Map();
function glueFiles(dir) {
  if (!glueCache.size) {
    for (const f of fs.readdirSync(dir)) if (f.endsWith('.py') || f.endsWith('.mpy')) glueCache.set(f, fs.readFileSync(path.join(dir, f)));
  }
  return [...glueCache.keys()];
}
let mp = null;
let generation = 0;
let mode = 'boot'; // boot | app | friendly | raw | paste | running
let rawBuf = [];
let pasteBuf = [];
let pasteWindow = 512;
let pasteSeen = 0;
let ctrlE = 0; // progress through "\x05A\x01"

function stdinBlocking() {
  flushOut();
  while (inputAvailable() === 0) {
    if (resetting) return null;
    Atomics.wait(ctl, 0, Atomics.load(ctl, 0), 100);
  }
  return readByte();
}

function stdoutByte(c) {
  if (c === 10 && !binaryStdout && lastWasSingle) { emitByte(13); }
  emitByte(c);
}
let lastWasSingle = false;

async function bootVM(rawRepl, soft) {
  const gen = ++generation;
  mode = 'boot';
  clock.clearAll();
  if (wdt) wdtFeed(); // the watchdog keeps running across a soft reset, as on an ESP32
  for (const t of timers.values()) clock.clearTimeout(t.id);
  timers.clear();
  pins.irqs.clear();
  for (const p of [...pwm.keys()]) hwApi.pwm_deinit(p);
  uartRx.clear();
  pyEvent = null;
  binaryStdout = false;
  mp = null;
  mp = await loadMicroPython({
    heapsize: cfg.heapsize || 2 * 1024 * 1024,
    romfs: romPartition(), // mapped outside the GC heap; MicroPython mounts a valid image at /rom itself
    linebuffer: false,
    stdout: (b) => { for (const c of b) stdoutByte(c); },
    stderr: (b) => { for (const c of b) stdoutByte(c); },
    stdin: stdinBlocking,
  });
  const FS = mp.FS;
  // print's "\n" arrives as a one-byte write: translate only those, so binary writes pass untouched
  const s1 = FS.getStream(1);
  const w1 = s1.stream_ops.write;
  s1.stream_ops = { ...s1.stream_ops, write(stream, buf, off, len, pos) { lastWasSingle = len === 1; const r = w1.call(this, stream, buf, off, len, pos); lastWasSingle = false; return r; } };
  FS.mkdir('/flash');
  copyIn(FS, cfg.flashDir, '/flash');
  hookFs(FS);
  FS.mkdir('/_emu');
  const glue = cfg.glueDir || MPY_DIR; // precompiled .mpy when the host has mpy-cross, else the sources
  for (const f of glueFiles(glue)) FS.writeFile(`/_emu/${f}`, glueCache.get(f));
  mp.registerJsModule('_hw', hwApi);
  mp.runPython('import sys\nsys.path.insert(0, "/_emu")\nimport _emu\n_emu.setup()\n');
  if (gen !== generation) return;
  if (soft) emit('MPY: soft reboot\r\n');
  await runFile('boot.py', gen);
  if (gen !== generation) return;
  if (rawRepl) {
    muted = true; mp.replInit(); muted = false;
    enterRaw();
    parentPort.postMessage({ type: 'booted', mode });
  } else {
    const hasMain = fs.existsSync(path.join(cfg.flashDir, 'main.py'));
    if (hasMain) {
      mode = 'app';
      parentPort.postMessage({ type: 'booted', mode });
      // a Ctrl-C that came during boot waited in the input buffer: it stops main.py once it runs
      realSetImmediate(drainInput);
      const r = await runFile('main.py', gen);
      if (gen !== generation) return;
      if (r === 'exit') { softReset(false); return; }
    }
    mode = 'friendly';
    mp.replInit();
  }
  if (!rawRepl) parentPort.postMessage({ type: 'booted', mode });
  drainInput();
}

// Run /flash/<name> as the board would; a module-level asyncio.run(x) becomes `await x`.
async function runFile(name, gen) {
  const hp = path.join(cfg.flashDir, name);
  if (!fs.existsSync(hp)) return 'none';
  const src = fs.readFileSync(hp, 'utf8');
  const [status, text] = await runCode(transformAsyncioRun(src), gen);
  if (status === 'error' && gen === generation) emit(text);
  return status;
}

function transformAsyncioRun(src) {
  return src.replace(/^asyncio\.run\((.*)\)[ \t]*(#.*)?$/gm, 'await asyncio._emu_main($1)');
}

// Returns [status, traceback text]; status is 'ok' | 'error' | 'exit' | 'interrupted'.
async function runCode(code, gen) {
  try {
    await busy(() => mp.runPythonAsync(code)); // busy for its synchronous start; timers cover the rest
    return ['ok', ''];
  } catch (e) {
    if (gen !== generation) return ['interrupted', ''];
    const text = String(e && e.message ? e.message : e);
    const last = text.trim().split('\n').pop();
    if (/^SystemExit\b/.test(last)) return ['exit', ''];
    if (/AppStarted/.test(last)) { await appForever(gen); return ['interrupted', '']; }
    return ['error', text.replace(/\r?\n/g, '\r\n').replace(/(\r\n)?$/, '\r\n')];
  }
}
function appForever(gen) { return new Promise((resolve) => { const chk = () => { if (gen !== generation) resolve(); else realSetTimeout(chk, 200); }; chk(); }); }

function enterRaw() {
  mode = 'raw';
  rawBuf = [];
  ctrlE = 0;
  emit('raw REPL; CTRL-B to exit\r\n>');
}

function interruptApp() {
  // Ctrl-C while the app (or async raw-REPL code) runs: stop every task, as KeyboardInterrupt stops the loop.
  generation++;
  // twice: a KeyboardInterrupt still pending in the VM is raised (and dropped) by the first attempt
  for (let i = 0; i < 2; i++) { try { mp.runPython('import _emu\n_emu.stop_tasks()'); break; } catch (e) { /* retry */ } }
  return generation;
}

function softReset(rawRepl) {
  flushOut();
  // boot the next VM after the current JS task unwinds (the old VM may be in the middle of a call)
  generation++;
  mode = 'boot';
  realSetTimeout(() => { bootVM(rawRepl, true).catch(fatal); }, 0);
}

// A timer callback runs the app's asyncio loop. KeyboardInterrupt (Ctrl-C) or SystemExit escaping from it
// ends the app as it ends asyncio.run() on a board; anything else is reported and the loop goes on.
function runTimer(fn, args) {
  try { busy(() => fn(...args)); } catch (e) {
    const type = e && e.type;
    if (type === 'KeyboardInterrupt' && (mode === 'app' || mode === 'running')) {
      const text = String(e.message || '').replace(/\r?\n/g, '\r\n').replace(/(\r\n)?$/, '\r\n');
      endProgram(text);
    } else if (type === 'SystemExit' && (mode === 'app' || mode === 'running')) {
      softReset(mode === 'running');
    } else emitErr(`timer: ${e && e.stack || e}`);
  }
}

// Ctrl-C ends the running program: every task stops, the traceback is printed, the REPL takes over.
function endProgram(traceback) {
  const wasRunning = mode === 'running';
  interruptApp();
  if (wasRunning) {
    emit(`\x04${traceback}\x04>`);
    mode = 'raw'; rawBuf = [];
  } else {
    emit(traceback);
    mode = 'friendly';
    mp.replInit();
  }
  queueMicrotask(drainInput);
}

function processChar(c) {
  switch (mode) {
    case 'boot':
      return false; // not consumed: wait for the REPL
    case 'app':
    case 'running':
      if (c === 3) endProgram('Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n');
      return true;
    case 'friendly': {
      if (c === 1) { emit('\r\n'); enterRaw(); return true; }
      const r = mp.replProcessChar(c);
      if (r) softReset(false);
      return true;
    }
    case 'raw':
      if (ctrlE === 1) { if (c === 65) { ctrlE = 2; return true; } rawBuf.push(5); ctrlE = 0; }
      else if (ctrlE === 2) {
        ctrlE = 0;
        if (c === 1) { startPaste(); return true; }
        rawBuf.push(5, 65);
      }
      if (c === 5 && rawBuf.length === 0) { ctrlE = 1; return true; }
      if (c === 1) { emit('\r\n'); enterRaw(); return true; }
      if (c === 2) { mode = 'friendly'; emit('\r\n'); mp.replInit(); return true; }
      if (c === 3) { rawBuf = []; return true; }
      if (c === 4) {
        if (rawBuf.length === 0) { emit('\r\n'); softReset(true); return true; }
        const code = Buffer.from(rawBuf).toString('utf8');
        rawBuf = [];
        emit('OK');
        execRaw(code);
        return true;
      }
      rawBuf.push(c);
      return true;
    case 'paste':
      if (c === 4) {
        emit('\x04');
        const code = Buffer.from(pasteBuf).toString('utf8');
        pasteBuf = [];
        execRaw(code);
        return true;
      }
      pasteBuf.push(c);
      if (++pasteSeen % pasteWindow === 0) emit('\x01');
      return true;
    default:
      return true;
  }
}

function startPaste() {
  mode = 'paste';
  pasteBuf = [];
  pasteSeen = 0;
  emit('R\x01');
  emit(String.fromCharCode(pasteWindow & 0xff, pasteWindow >> 8) + '\x01');
}

// Execute one raw-REPL program: stdout, \x04, the exception, \x04, '>'.
function execRaw(code) {
  mode = 'running';
  const gen = generation;
  flushOut();
  runCode(transformAsyncioRun(code), gen).then(([r, text]) => {
    if (gen !== generation) return;
    if (r === 'exit') { emit('\x04\x04>'); softReset(true); return; }
    // tasks the program left queued keep running in the background (see _emu.kick_loop)
    try { mp.runPython('import _emu\n_emu.kick_loop()'); } catch (e) { /* a pending Ctrl-C: the REPL takes over */ }
    emit(`\x04${text}\x04>`);
    mode = 'raw';
    rawBuf = [];
    drainInput();
  });
}

let draining = false;
function drainInput() {
  if (draining) return;
  draining = true;
  try {
    while (inputAvailable() > 0) {
      if (mode === 'boot' || resetting) break;
      if (mode === 'app' || mode === 'running') {
        // while a program runs only Ctrl-C acts; other input waits for the REPL, as in a board's UART buffer
        if (!peekHasCtrlC()) break;
        consumeThroughCtrlC();
        processChar(3);
        continue;
      }
      const r = Atomics.load(ctl, 1);
      const c = ring[r % RING];
      Atomics.store(ctl, 1, r + 1);
      busy(() => processChar(c));
    }
  } finally { draining = false; flushOut(); }
}

function fatal(e) {
  emitErr(`board worker failed: ${e && e.stack || e}`);
  parentPort.postMessage({ type: 'fatal', text: String(e && e.stack || e) });
}

// ---- control messages from the host thread -------------------------------------------------------------
function reply(id, ok, result) { parentPort.postMessage({ type: 'reply', id, ok, result }); }

function hwState() {
  const st = { now_ms: clock.now(), virtual_time: clock.virtual, mode, devices: {}, pins: {}, pwm: {} };
  for (const [name, d] of devices) { d.tick(clock.now()); st.devices[name] = d.state(); }
  for (const [p, v] of pins.vals) st.pins[p] = v;
  for (const [p, v] of pins.ext) st.pins[p] = pins.value(p);
  for (const [p, v] of pwm) st.pwm[p] = { freq: v.freq, duty_u16: v.duty };
  if (wdt) st.wdt_timeout_ms = wdt.timeout;
  return st;
}

parentPort.on('message', (m) => {
  if (m.type === 'kick') { drainInput(); return; }
  if (m.type === 'uart') { callPy('uart', m.uart, m.data); return; }
  if (m.type === 'horizon') { scheduleRun(); return; }
  if (m.type !== 'ctl') return;
  try {
    switch (m.op) {
      case 'set': {
        const dev = devices.get(m.device);
        if (!dev) throw new Error(`no device ${m.device}; this board has: ${[...devices.keys()].join(', ')}`);
        dev.tick(clock.now());
        dev.set(m.props || {});
        flushOut();
        return reply(m.id, true, dev.state());
      }
      case 'state': return reply(m.id, true, hwState());
      case 'trace': {
        const pin = typeof m.pin === 'number' ? m.pin : (cfg.pins || {})[m.pin];
        return reply(m.id, true, pins.traces.get(pin) || []);
      }
      case 'advance': {
        if (!clock.virtual) throw new Error('this board runs on real time; start it with virtual_time=True');
        pendingAdvances.push({ id: m.id, target: horizon[0] });
        scheduleRun();
        return undefined;
      }
      case 'ping': return reply(m.id, true, { mode, now_ms: clock.now() });
      default: throw new Error(`unknown op ${m.op}`);
    }
  } catch (e) { reply(m.id, false, String(e.message || e)); }
});

bootVM(!!cfg.rawRepl, !!cfg.soft).catch(fatal);

// Host process of one or more emulated boards (each board is a worker thread running board_worker.mjs).
//
//   node host.mjs CONFIG.json
// CONFIG: {"micropython": path, "boards": [{"id", "repl_fd", "link_fd", "flash", "virtual_time", "start_time_ms",
//          "unique_id": [bytes], "pins": {...}, "devices": [...], "heapsize", "seed",
//          "rom_size": bytes (0: no ROMFS partition), "rom_image": host file holding the partition}]}
// The REPL and link pseudo-terminal masters are inherited file descriptors; this thread reads and writes them,
// applies link faults, keeps each board's serial log, powers boards on and off and respawns a hung board.
//
// Control channel: JSON lines on stdin, {"id": n, "board": id, "op": ..., ...}; answers on stdout
// {"id": n, "ok": bool, "result"|"error": ...}; events {"event": "reset"|"log"|"fatal", "board": id, ...}.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import tty from 'node:tty';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from './rng.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(here, 'board_worker.mjs');
const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const LOG_MAX = 256 * 1024;
const wasmModule = await WebAssembly.compile(fs.readFileSync(path.join(path.dirname(config.micropython), 'micropython.wasm')));
const RING_SIZE = 1 << 16;
// a Ctrl-C unread this long means a VM in a loop that never sleeps; long enough that a worker only starved of
// CPU on a loaded machine is not taken for a hung one
const HUNG_MS = 4000;

// ESP32 ROM reset lines and MicroPython machine.reset_cause() values
const CAUSES = {
  pwron: { code: 1, rom: 'rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
  brownout: { code: 1, rom: 'rst:0xf (RTCWDT_BROWN_OUT_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
  hard: { code: 2, rom: 'rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
  hung: { code: 2, rom: 'rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
  wdt: { code: 3, rom: 'rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
  deepsleep: { code: 4, rom: 'rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)' },
};

function send(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }


// A pty master we read with libuv and write without ever blocking this thread (a port nobody has open
// drops what does not fit, like a UART with nobody listening).
class PtyPort {
  constructor(fd, onData) {
    this.fd = fd;
    this.queue = [];
    this.queued = 0;
    this.timer = null;
    this.stream = new tty.ReadStream(fd);
    this.stream.on('data', onData);
    this.stream.on('error', () => {});
  }
  write(buf) {
    if (!buf.length) return;
    this.queue.push(Buffer.from(buf));
    this.queued += buf.length;
    while (this.queued > 64 * 1024 && this.queue.length > 1) this.queued -= this.queue.shift().length;
    this.pump();
  }
  pump() {
    while (this.queue.length) {
      const head = this.queue[0];
      let n = 0;
      try { n = fs.writeSync(this.fd, head); } catch (e) {
        if (e.code !== 'EAGAIN') { this.queue = []; this.queued = 0; return; }
      }
      if (n === head.length) { this.queue.shift(); this.queued -= n; continue; }
      if (n > 0) { this.queue[0] = head.subarray(n); this.queued -= n; }
      if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.pump(); }, 5);
      return;
    }
  }
}

class Board {
  constructor(cfg) {
    this.cfg = cfg;
    this.id = cfg.id;
    this.ctlSab = new SharedArrayBuffer(8 * 4);
    this.ringSab = new SharedArrayBuffer(RING_SIZE);
    this.horizonSab = new SharedArrayBuffer(16); // [0] virtual-time horizon, [1] watchdog deadline (real ms)
    this.ctl = new Int32Array(this.ctlSab);
    this.ring = new Uint8Array(this.ringSab);
    this.horizon = new Float64Array(this.horizonSab);
    this.horizon[0] = cfg.start_time_ms ?? Date.now();
    this.log = [];
    this.logLen = 0;
    this.worker = null;
    this.powered = false;
    this.pending = new Map(); // control id -> true (answered by the worker)
    this.link = { cut: false, ber: 0, drop: 0, delay_ms: 0, rx_bytes: 0, tx_bytes: 0, corrupted: 0, dropped: 0 };
    this.linkLastDue = 0;
    this.rand = mulberry32(cfg.seed ?? 1);
    this.lastRead = 0;
    this.stuckSince = null; // when checkHung first saw the current Ctrl-C waiting (null: none seen yet)
    this.boots = 0;
    this.wakeAt = null; // virtual time: board time a deep-sleeping board wakes at
    this.resetReason = 'pwron';
    this.rtcOffsetMs = 0; // machine.RTC's offset from the board clock, kept across resets but power-on
    this.repl = new PtyPort(cfg.repl_fd, (d) => this.input(d));
    this.linkPort = cfg.link_fd !== undefined && cfg.link_fd !== null
      ? new PtyPort(cfg.link_fd, (d) => this.fromLink(d)) : null;
  }

  appendLog(buf) {
    this.log.push(Buffer.from(buf));
    this.logLen += buf.length;
    while (this.logLen > LOG_MAX && this.log.length > 1) this.logLen -= this.log.shift().length;
  }

  output(buf) { this.appendLog(buf); this.repl.write(buf); }

  input(data) {
    if (!this.powered) return; // a board without power does not hear its USB-serial adapter
    let w = Atomics.load(this.ctl, 0);
    for (const c of data) {
      if (w - Atomics.load(this.ctl, 1) >= RING_SIZE) break; // overrun: drop, as a full UART FIFO does
      this.ring[w % RING_SIZE] = c;
      w++;
    }
    Atomics.store(this.ctl, 0, w);
    Atomics.notify(this.ctl, 0);
    if (this.worker) this.worker.postMessage({ type: 'kick' });
  }

  // ---- link UART with faults -----------------------------------------------------------------------
  mangle(data, dir) {
    if (this.link.cut) return null;
    const out = [];
    for (let c of data) {
      if (this.link.drop && this.rand() < this.link.drop) { this.link.dropped++; continue; }
      if (this.link.ber) {
        let flipped = false;
        for (let bit = 0; bit < 8; bit++) if (this.rand() < this.link.ber) { c ^= 1 << bit; flipped = true; }
        if (flipped) this.link.corrupted++;
      }
      out.push(c);
    }
    void dir;
    return Uint8Array.from(out);
  }
  deliver(fn) {
    if (!this.link.delay_ms) { fn(); return; }
    const due = Math.max(Date.now() + this.link.delay_ms, this.linkLastDue);
    this.linkLastDue = due;
    setTimeout(fn, due - Date.now());
  }
  fromLink(data) {
    this.link.rx_bytes += data.length;
    if (!this.powered) return;
    const out = this.mangle(data, 'rx');
    if (!out || !out.length) return;
    this.deliver(() => { if (this.worker) this.worker.postMessage({ type: 'uart', uart: this.cfg.link_uart, data: out }); });
  }
  toLink(data) {
    this.link.tx_bytes += data.length;
    const out = this.mangle(data, 'tx');
    if (!out || !out.length || !this.linkPort) return;
    this.deliver(() => this.linkPort.write(out));
  }

  // ---- power and resets ----------------------------------------------------------------------------
  spawn(cause, opts = {}) {
    this.kill();
    this.powered = true;
    this.resetReason = cause;
    this.boots++;
    this.stuckSince = null; // a new VM: a Ctrl-C waiting from before is timed from now
    // input typed before the reset is gone, except after the Ctrl-C that made us respawn a hung board
    Atomics.store(this.ctl, 1, opts.keepInputFrom ?? Atomics.load(this.ctl, 0));
    this.horizon[1] = 0; // the watchdog is off after any reset until firmware arms it again
    const c = CAUSES[cause] || CAUSES.hard;
    // the ESP32's RTC domain keeps counting through a software, watchdog or deep-sleep reset; a power-on or
    // a brown-out starts it from zero (the time set through machine.RTC is lost)
    if (cause === 'pwron' || cause === 'brownout') this.rtcOffsetMs = 0;
    this.output(Buffer.from(`\r\n${c.rom}\r\n`, 'latin1'));
    const w = new Worker(WORKER, {
      workerData: {
        micropython: config.micropython,
        glueDir: config.glue,
        wasmModule,
        boardId: this.id,
        flashDir: this.cfg.flash,
        virtualTime: !!this.cfg.virtual_time,
        startTimeMs: this.cfg.virtual_time ? (opts.startMs ?? this.horizon[0]) : undefined,
        uniqueId: this.cfg.unique_id || [0, 0, 0, 0, 0, 0],
        resetCause: c.code,
        resetReason: cause,
        pins: this.cfg.pins || {},
        devices: this.cfg.devices || [],
        heapsize: this.cfg.heapsize,
        romSize: this.cfg.rom_size || 0,
        romImage: this.cfg.rom_image,
        rtcOffsetMs: this.rtcOffsetMs,
        replUart: 0,
        rawRepl: !!opts.rawRepl,
        ctlSab: this.ctlSab,
        ringSab: this.ringSab,
        horizonSab: this.horizonSab,
      },
    });
    this.worker = w;
    w.on('message', (m) => this.fromWorker(w, m));
    w.on('error', (e) => { send({ event: 'fatal', board: this.id, text: String(e && e.stack || e) }); });
    w.on('exit', () => { if (this.worker === w) this.worker = null; });
    send({ event: 'reset', board: this.id, cause, boots: this.boots });
  }

  maybeWake() {
    if (this.wakeAt !== null && this.wakeAt <= this.horizon[0] && !this.worker && this.powered) {
      const at = this.wakeAt;
      this.wakeAt = null;
      this.spawn('deepsleep', { startMs: at });
    }
  }

  kill() {
    const w = this.worker;
    this.worker = null;
    if (w) w.terminate();
    for (const [id, op] of this.pending) {
      // a board that resets during advance() restarts at the granted time: the advance is complete
      if (op === 'advance') send({ id, ok: true, result: { now_ms: this.horizon[0], reset: true } });
      else send({ id, ok: false, error: `board ${this.id} reset while answering ${op}` });
    }
    this.pending.clear();
  }

  powerOff() { this.kill(); this.powered = false; }

  fromWorker(w, m) {
    if (w !== this.worker) return; // a terminated worker's last words
    switch (m.type) {
      case 'out': this.output(m.data); break;
      case 'uart':
        if (m.uart === this.cfg.link_uart) this.toLink(m.data);
        break;
      case 'reset':
        if (m.cause === 'deepsleep') {
          this.kill();
          const ms = m.sleep_ms || 0;
          if (this.cfg.virtual_time) { // wake when the host has advanced the clock past the sleep
            this.wakeAt = (m.now_ms ?? this.horizon[0]) + ms;
            this.maybeWake();
          } else setTimeout(() => { if (!this.worker && this.powered) this.spawn('deepsleep'); }, ms);
        } else this.spawn(m.cause);
        break;
      case 'reply':
        this.pending.delete(m.id);
        send(m.ok ? { id: m.id, ok: true, result: m.result } : { id: m.id, ok: false, error: m.result });
        break;
      case 'rtc': this.rtcOffsetMs = m.ms; break;
      case 'booted': this.mode = m.mode; send({ event: 'booted', board: this.id, mode: m.mode, boots: this.boots }); break;
      case 'log': send({ event: 'log', board: this.id, text: m.text }); break;
      case 'fatal': send({ event: 'fatal', board: this.id, text: m.text }); break;
      default: break;
    }
  }

  // A VM stuck in a loop that never sleeps cannot see Ctrl-C: if a Ctrl-C waits unread for HUNG_MS,
  // respawn the board (a hard reset, as pressing EN on a hung board).
  checkHung(now) {
    if (!this.worker) return;
    // a watchdog armed by firmware that then hangs in a loop: the worker cannot run its own WDT timer
    const wdtDeadline = this.horizon[1];
    if (!this.cfg.virtual_time && wdtDeadline > 0 && now > wdtDeadline + 250) { this.horizon[1] = 0; this.spawn('wdt'); return; }
    const r = Atomics.load(this.ctl, 1);
    const w = Atomics.load(this.ctl, 0);
    let ctrlC = -1;
    for (let i = r; i < w; i++) if (this.ring[i % RING_SIZE] === 3) { ctrlC = i; break; }
    // the clock starts when a waiting Ctrl-C is first seen: starting at 0, a Ctrl-C that came before the board
    // had read any input at all (read pointer still 0) counted as unread since 1970 and reset a healthy board
    if (ctrlC < 0 || r !== this.lastRead || this.stuckSince === null) { this.lastRead = r; this.stuckSince = now; return; }
    if (now - this.stuckSince > HUNG_MS) { this.stuckSince = null; this.spawn('hung', { keepInputFrom: ctrlC + 1 }); }
  }

  control(m) {
    switch (m.op) {
      case 'power_on': if (!this.worker) this.spawn(m.cause || 'pwron'); return { powered: true };
      case 'power_off': this.powerOff(); return { powered: false };
      case 'power_cut': { // at an arbitrary moment: after_ms from now (real time), back on after off_ms
        const after = Number(m.after_ms || 0);
        const off = Number(m.off_ms ?? 50);
        setTimeout(() => {
          this.powerOff();
          setTimeout(() => { if (!this.worker) this.spawn('pwron'); }, off);
        }, after);
        return { scheduled: true, after_ms: after, off_ms: off };
      }
      case 'reset': this.spawn(m.cause || 'hard'); return { cause: m.cause || 'hard' };
      case 'serial_log': return Buffer.concat(this.log).toString('latin1');
      case 'clear_log': this.log = []; this.logLen = 0; return true;
      case 'link': {
        for (const k of ['cut', 'ber', 'drop', 'delay_ms']) if (k in m) this.link[k] = m[k];
        return { ...this.link };
      }
      case 'status':
        return { powered: this.powered, boots: this.boots, reset_reason: this.resetReason, link: { ...this.link },
          asleep: this.wakeAt !== null,
          horizon_ms: this.horizon[0] };
      case 'advance':
        if (!this.cfg.virtual_time) throw new Error('this board runs on real time; start it with virtual_time=True');
        this.horizon[0] += Number(m.ms);
        Atomics.add(this.ctl, 2, 1);
        Atomics.notify(this.ctl, 2);
        if (!this.worker) { // asleep or off: time passes without a CPU
          this.maybeWake();
          if (!this.worker) return { now_ms: this.horizon[0], asleep: true };
        }
        return undefined; // forwarded: the worker answers when its clock got there
      default: return undefined;
    }
  }
}

const boards = new Map();
for (const b of config.boards) {
  const board = new Board(b);
  boards.set(String(b.id), board);
  if (b.power !== false) board.spawn('pwron');
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let m;
  try { m = JSON.parse(line); } catch (e) { send({ event: 'error', text: `bad control line: ${line.slice(0, 80)}` }); return; }
  const board = boards.get(String(m.board));
  if (!board) { send({ id: m.id, ok: false, error: `no board ${m.board}` }); return; }
  try {
    const local = board.control(m);
    const forward = local === undefined;
    if (!forward) { send({ id: m.id, ok: true, result: local }); return; }
    if (!board.worker) { send({ id: m.id, ok: false, error: `board ${board.id} is powered off` }); return; }
    board.pending.set(m.id, m.op);
    board.worker.postMessage({ ...m, type: 'ctl' });
  } catch (e) {
    send({ id: m.id, ok: false, error: String(e.message || e) });
  }
});
rl.on('close', () => { for (const b of boards.values()) b.kill(); process.exit(0); });

const hungTimer = setInterval(() => { const now = Date.now(); for (const b of boards.values()) b.checkHung(now); }, 250);
hungTimer.unref?.();
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { for (const b of boards.values()) b.kill(); process.exit(0); });
send({ event: 'started', boards: [...boards.keys()] });

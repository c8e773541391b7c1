// MAX30102 pulse-oximeter model (Maxim/Analog Devices datasheet 19-7740) on the emulator's device framework.
//
// Registers: INT_STATUS1/2 (0x00/0x01, cleared on read), INT_ENABLE1/2, FIFO_WR_PTR (0x04), OVF_COUNTER
// (0x05), FIFO_RD_PTR (0x06), FIFO_DATA (0x07: reads stream samples without moving the register pointer),
// FIFO_CONFIG (0x08: SMP_AVE, FIFO_ROLLOVER_EN, FIFO_A_FULL), MODE_CONFIG (0x09: SHDN, RESET, MODE),
// SPO2_CONFIG (0x0A: ADC range, sample rate, pulse width = resolution), LED1_PA (red) / LED2_PA (IR),
// REV_ID (0xFE), PART_ID (0xFF = 0x15).
//
// Samples come from the PPG signal model (ppg.mjs) on the board clock at the configured rate (divided by the
// sample averaging), scaled by LED current and ADC range, truncated to the configured resolution
// (MSB-aligned at bit 17). A 32-sample FIFO: when full, new samples overwrite the oldest (rollover enabled)
// or are dropped (disabled), and OVF_COUNTER counts the lost samples (saturating at 31) until a sample is read.
//
// Host control ({"op": "set", "device": "max30102", ...}): any PPG parameter (hr_bpm, spo2, perfusion_pct,
// noise_counts, wander, hrv, motion, probe_on, ...), plus attached/stuck from the framework.
import { I2CRegisterDevice, registerDevice } from '../devices.mjs';
import { PpgSignal, DEFAULTS as PPG_DEFAULTS } from './ppg.mjs';

const RATES = [50, 100, 200, 400, 800, 1000, 1600, 3200];
const FULL_SCALE_NA = [2048, 4096, 8192, 16384];
const BITS = [15, 16, 17, 18];
const DEPTH = 32;

export class MAX30102 extends I2CRegisterDevice {
  static kind = 'max30102';
  constructor(board, opts = {}) {
    super(board, { address: 0x57, ...opts });
    this.signal = new PpgSignal(opts.signal || {});
    this.fifo = []; // [red, ir] pairs, oldest first
    this.readByte = 0; // byte position inside the sample at the head of the FIFO
    this.lastSample = [0, 0];
    this.generated = 0; // samples produced since the mode started
    this.modeStartMs = 0;
    this.samplesLost = 0; // total, for test assertions
    this.reset();
  }
  reset() {
    this.regs.fill(0);
    this.regs[0x00] = 0x01; // PWR_RDY
    this.regs[0xfe] = 0x03;
    this.regs[0xff] = 0x15;
    this.fifo = [];
    this.wrPtr = 0; this.rdPtr = 0; this.ovf = 0; this.readByte = 0;
  }
  onMcuReset(_hard) { /* the sensor keeps its power and registers across an MCU reset */ }
  setProp(k, v) {
    if (k in PPG_DEFAULTS) { this.signal.set({ [k]: v }); return true; }
    return false;
  }
  mode() { return this.regs[0x09] & 0x80 ? 0 : this.regs[0x09] & 0x07; }
  channels() { const m = this.mode(); return m === 3 || m === 7 ? 2 : m === 2 ? 1 : 0; }
  rateHz() {
    const sr = RATES[(this.regs[0x0a] >> 2) & 7];
    const avg = 1 << Math.min(5, (this.regs[0x08] >> 5) & 7);
    return sr / avg;
  }
  tick(now) {
    if (!this.channels()) { this.modeStartMs = now; this.generated = 0; return; }
    const rate = this.rateHz();
    const due = Math.floor(((now - this.modeStartMs) * rate) / 1000);
    let n = due - this.generated;
    if (n <= 0) return;
    // after a long stall only the last FIFO-full matters; the rest is lost all the same
    if (n > 4 * DEPTH) {
      const skip = n - 4 * DEPTH;
      this.signal.sample((this.modeStartMs + (this.generated + skip) * 1000 / rate) / 1000, skip / rate);
      this._lose(skip);
      this.generated += skip;
      n -= skip;
    }
    for (let i = 0; i < n; i++) {
      this.generated += 1;
      const t = (this.modeStartMs + (this.generated * 1000) / rate) / 1000;
      this._push(this._measure(t, 1 / rate));
    }
  }
  _measure(t, dt) {
    if (this.stuck) return this.lastSample;
    const [red, ir] = this.signal.sample(t, dt);
    const range = FULL_SCALE_NA[(this.regs[0x0a] >> 5) & 3];
    const bits = BITS[this.regs[0x0a] & 3];
    const mask = 0x3ffff & ~((1 << (18 - bits)) - 1);
    const scale = (ch, counts) => {
      const pa = this.regs[ch === 0 ? 0x0c : 0x0d];
      const amb = this.signal.p.ambient_counts;
      const v = amb + (counts - amb) * (pa / 0x24) * (4096 / range);
      return Math.max(0, Math.min(0x3ffff, Math.round(v))) & mask;
    };
    this.lastSample = [scale(0, red), scale(1, ir)];
    return this.lastSample;
  }
  _lose(n) {
    this.samplesLost += n;
    this.ovf = Math.min(31, this.ovf + n);
  }
  _push(s) {
    if (this.fifo.length >= DEPTH) {
      if (this.regs[0x08] & 0x10) { // rollover: the oldest sample is overwritten
        this.fifo.shift(); this.readByte = 0; this.rdPtr = (this.rdPtr + 1) & 31;
      } else { this._lose(1); return; }
      this._lose(1);
    }
    this.fifo.push(s);
    this.wrPtr = (this.wrPtr + 1) & 31;
    this.regs[0x00] |= 0x40; // PPG_RDY
    const aFull = DEPTH - (this.regs[0x08] & 0x0f);
    if (this.fifo.length >= aFull) this.regs[0x00] |= 0x80;
  }
  _popByte() {
    const nch = this.channels() || 2;
    if (!this.fifo.length) return 0;
    const s = this.fifo[0];
    const ch = Math.floor(this.readByte / 3);
    const v = s[Math.min(ch, 1)];
    const b = [(v >> 16) & 0x03, (v >> 8) & 0xff, v & 0xff][this.readByte % 3];
    this.readByte += 1;
    if (this.readByte >= 3 * nch) {
      this.fifo.shift(); this.readByte = 0; this.rdPtr = (this.rdPtr + 1) & 31; this.ovf = 0;
    }
    return b;
  }
  readReg(reg) {
    switch (reg) {
      case 0x00: { const v = this.regs[0]; this.regs[0] = 0; return v; }
      case 0x01: { const v = this.regs[1]; this.regs[1] = 0; return v; }
      case 0x04: return this.wrPtr;
      case 0x05: return this.ovf;
      case 0x06: return this.rdPtr;
      case 0x07: return this._popByte();
      default: return this.regs[reg];
    }
  }
  writeReg(reg, value) {
    switch (reg) {
      case 0x04: this.wrPtr = value & 31; this._resync(); return;
      case 0x05: this.ovf = value & 31; return;
      case 0x06: this.rdPtr = value & 31; this._resync(); return;
      case 0x07: return;
      case 0x09:
        if (value & 0x40) { this.reset(); return; }
        this.regs[0x09] = value & 0x87;
        this.modeStartMs = this.now(); this.generated = 0;
        return;
      case 0x00: case 0xfe: case 0xff: return; // read-only
      default: this.regs[reg] = value;
    }
  }
  _resync() {
    // pointer writes (used to clear the FIFO): keep the FIFO contents consistent with WR - RD
    const n = (this.wrPtr - this.rdPtr) & 31;
    while (this.fifo.length > n) this.fifo.shift();
    this.readByte = 0;
  }
  i2cRead(n) {
    if (this.pointer === 0x07) { // FIFO_DATA: the register pointer stays put during a burst
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = this._popByte();
      return out;
    }
    return super.i2cRead(n);
  }
  state() {
    return { ...super.state(), mode: this.mode(), rate_hz: this.channels() ? this.rateHz() : 0,
      fifo: this.fifo.length, ovf: this.ovf, samples_lost: this.samplesLost, led_pa: [this.regs[0x0c], this.regs[0x0d]],
      signal: { ...this.signal.p } };
  }
}
registerDevice(MAX30102);

// Peripheral models of the emulated board, and the small framework they are built on.
//
// A model lives inside the board's worker thread, next to the MicroPython VM, so an I2C transaction costs
// a function call (no host round trip) and models advance on the board's own clock (virtual or real).
//
// Writing a model (see hil_tests/README.md, "Adding a device model"):
//   class MyChip extends I2CRegisterDevice {
//     static kind = 'mychip';                 // name used by the control channel and board config
//     constructor(board, opts) { super(board, opts); this.regs[0x00] = 0x12; }
//     readReg(reg) { ... return byte }       // one byte at a time, the pointer auto-increments
//     writeReg(reg, value) { ... }
//     tick(nowMs) { ... }                    // called before every bus access and on control requests
//     set(props) { ... }                     // host control: {"op": "set", "device": "mychip", ...}
//     state() { return {...super.state(), ...} }
//   }
//   registerDevice(MyChip);
// then list it in the board's device config (hil_tests/emulator/board.py: DEFAULT_DEVICES).

export const deviceClasses = new Map();

/** Make a model class available to board configs under its static ``kind``. */
export function registerDevice(cls) {
  if (!cls.kind) throw new Error('device class needs a static kind');
  deviceClasses.set(cls.kind, cls);
}

/** Base of every model: a name, the board it is wired to, attach/stuck faults and a JSON state. */
export class Device {
  static kind = 'device';
  constructor(board, opts = {}) {
    this.board = board;
    this.name = opts.name || this.constructor.kind;
    this.opts = opts;
    this.attached = true; // false = unplugged: no I2C ACK, inputs float
    this.stuck = false; // true = the readings freeze at their current value
  }
  now() { return this.board.clock.now(); }
  tick(_nowMs) {}
  /** Apply host control properties; unknown keys are an error so a typo in a test fails loudly. */
  set(props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'attached') this.attached = !!v;
      else if (k === 'stuck') this.stuck = !!v;
      else if (!this.setProp(k, v)) throw new Error(`${this.name}: unknown property ${k}`);
    }
  }
  setProp(_k, _v) { return false; }
  state() { return { kind: this.constructor.kind, attached: this.attached, stuck: this.stuck }; }
  /** Called at soft/hard reset of the MCU (peripheral chips keep power at soft reset). */
  onMcuReset(_hard) {}
}

/** An I2C target. Subclasses implement i2cWrite/i2cRead; returning false from i2cWrite is a NACK. */
export class I2CDevice extends Device {
  constructor(board, opts = {}) {
    super(board, opts);
    this.address = opts.address;
    this.bus = opts.bus ?? 0;
  }
  i2cWrite(_bytes) { return true; }
  i2cRead(n) { return new Uint8Array(n).fill(0xff); }
  state() { return { ...super.state(), address: this.address }; }
}

/**
 * A register-file I2C chip: the first written byte sets the register pointer, further written bytes go to
 * writeReg(pointer++), reads come from readReg(pointer++). Chips with 16-bit registers override
 * regSize = 2 and get/put whole words through readWord/writeWord (big-endian on the wire).
 */
export class I2CRegisterDevice extends I2CDevice {
  regSize = 1;
  constructor(board, opts = {}) {
    super(board, opts);
    this.pointer = 0;
    this.regs = new Uint8Array(256);
    this._frozen = null;
  }
  readReg(reg) { return this.regs[reg]; }
  writeReg(reg, value) { this.regs[reg] = value; }
  readWord(reg) { return (this.readReg(reg) << 8) | this.readReg(reg + 1); }
  writeWord(_reg, _value) {}
  i2cWrite(bytes) {
    if (bytes.length === 0) return true;
    this.pointer = bytes[0];
    if (this.regSize === 2) {
      for (let i = 1; i + 1 < bytes.length; i += 2) this.writeWord(this.pointer, (bytes[i] << 8) | bytes[i + 1]);
    } else {
      for (let i = 1; i < bytes.length; i++) { this.writeReg(this.pointer, bytes[i]); this.pointer = (this.pointer + 1) & 0xff; }
    }
    return true;
  }
  i2cRead(n) {
    const out = new Uint8Array(n);
    if (this.regSize === 2) {
      for (let i = 0; i < n; i += 2) {
        const w = this.readWord(this.pointer);
        out[i] = (w >> 8) & 0xff;
        if (i + 1 < n) out[i + 1] = w & 0xff;
      }
    } else {
      for (let i = 0; i < n; i++) { out[i] = this.readReg(this.pointer); this.pointer = (this.pointer + 1) & 0xff; }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------
// BH1750 ambient light sensor (ROHM datasheet): opcode commands, 16-bit result, MTreg sensitivity.
export class BH1750 extends I2CDevice {
  static kind = 'bh1750';
  constructor(board, opts) {
    super(board, { address: 0x23, ...opts });
    this.lux = opts.lux ?? 100;
    this.powered = false;
    this.mode = 0; // last measurement opcode
    this.mtreg = 69;
    this.readyAt = Infinity;
    this.result = 0;
    this.pendingMt = null;
  }
  setProp(k, v) { if (k === 'lux') { this.lux = Number(v); return true; } return false; }
  _measureMs() {
    const low = this.mode === 0x13 || this.mode === 0x23;
    return (low ? 16 : 120) * this.mtreg / 69;
  }
  _counts() {
    const highRes2 = this.mode === 0x11 || this.mode === 0x21;
    const c = this.lux * 1.2 * (this.mtreg / 69) * (highRes2 ? 2 : 1);
    return Math.max(0, Math.min(0xffff, Math.round(c)));
  }
  tick(now) {
    if (this.readyAt <= now && !this.stuck) {
      this.result = this._counts();
      if (this.mode >= 0x20) { this.powered = false; this.readyAt = Infinity; } // one-time: back to power down
      else this.readyAt = now + this._measureMs(); // continuous: next conversion
    }
  }
  i2cWrite(bytes) {
    for (const op of bytes) {
      if (op === 0x00) { this.powered = false; this.readyAt = Infinity; }
      else if (op === 0x01) this.powered = true;
      else if (op === 0x07) { if (this.powered) this.result = 0; }
      else if ((op & 0xf8) === 0x40) this.mtreg = (this.mtreg & 0x1f) | ((op & 0x07) << 5);
      else if ((op & 0xe0) === 0x60) this.mtreg = (this.mtreg & 0xe0) | (op & 0x1f);
      else if ([0x10, 0x11, 0x13, 0x20, 0x21, 0x23].includes(op)) {
        this.powered = true; this.mode = op; this.readyAt = this.now() + this._measureMs();
      }
    }
    return true;
  }
  i2cRead(n) {
    const out = new Uint8Array(n);
    out[0] = (this.result >> 8) & 0xff;
    if (n > 1) out[1] = this.result & 0xff;
    return out;
  }
  state() { return { ...super.state(), lux: this.lux, powered: this.powered, mode: this.mode, mtreg: this.mtreg, counts: this.result }; }
}
registerDevice(BH1750);

// ---------------------------------------------------------------------------------------------------
// The lamp: an LED driver behind a relay, dimmed by a PWM pin. Its electrical draw feeds the INA219.
export class Lamp extends Device {
  static kind = 'lamp';
  constructor(board, opts) {
    super(board, opts);
    this.pwmPin = opts.pwm_pin;
    this.relayPin = opts.relay_pin;
    this.ratedW = opts.rated_w ?? 40; // full power at duty 100 %
    this.supplyV = opts.supply_v ?? 24.0;
    this.idleW = opts.idle_w ?? 0.6; // driver quiescent draw when the relay is closed
    this.health = 'ok'; // ok | open | short | driver_fault
  }
  setProp(k, v) {
    if (k === 'health') {
      if (!['ok', 'open', 'short', 'driver_fault'].includes(v)) throw new Error(`lamp: unknown health ${v}`);
      this.health = v; return true;
    }
    if (k === 'rated_w') { this.ratedW = Number(v); return true; }
    if (k === 'supply_v') { this.supplyV = Number(v); return true; }
    return false;
  }
  relayOn() { return this.relayPin === undefined || this.board.pins.value(this.relayPin) === 1; }
  duty() { return this.board.pwmDuty(this.pwmPin); }
  /** [bus volts, amps] as the energy meter sees them. */
  electrical() {
    if (!this.relayOn()) return [this.supplyV, 0];
    switch (this.health) {
      case 'open': return [this.supplyV, 0.002];
      case 'short': return [this.supplyV * 0.15, 3.4];
      case 'driver_fault': return [this.supplyV, this.idleW / this.supplyV];
      default: {
        const w = this.idleW + this.ratedW * this.duty();
        return [this.supplyV, w / this.supplyV];
      }
    }
  }
  light() { return this.health === 'ok' && this.relayOn() ? this.duty() : 0; }
  state() {
    const [v, a] = this.electrical();
    return { ...super.state(), health: this.health, relay: this.relayOn(), duty: this.duty(), bus_v: v, current_a: a,
      power_w: v * a, light: this.light() };
  }
}
registerDevice(Lamp);

// ---------------------------------------------------------------------------------------------------
// INA219 current/power monitor (TI datasheet): 16-bit big-endian registers, calibration-scaled current.
export class INA219 extends I2CRegisterDevice {
  static kind = 'ina219';
  regSize = 2;
  constructor(board, opts) {
    super(board, { address: 0x40, ...opts });
    this.shuntOhm = opts.shunt_ohm ?? 0.1;
    this.source = opts.source || 'lamp';
    this.config = 0x399f;
    this.calibration = 0;
    this.snapshot = null;
  }
  _measure() {
    const src = this.board.devices.get(this.source);
    let [v, a] = src && src.electrical ? src.electrical() : [0, 0];
    if (this.stuck) { if (!this.snapshot) this.snapshot = [v, a]; [v, a] = this.snapshot; } else this.snapshot = null;
    const pgaMv = [40, 80, 160, 320][(this.config >> 11) & 3];
    let shuntMv = a * this.shuntOhm * 1000;
    let ovf = 0;
    if (shuntMv > pgaMv) { shuntMv = pgaMv; ovf = 1; }
    const shuntRaw = Math.round(shuntMv * 100); // LSB 10 uV
    const brng32 = (this.config >> 13) & 1;
    const busMax = brng32 ? 32 : 16;
    const busRaw = Math.min(Math.round(Math.min(v, busMax) / 0.004), 0x1fff);
    const current = Math.trunc((shuntRaw * this.calibration) / 4096);
    const power = Math.trunc((current * busRaw) / 5000);
    return { shuntRaw, busRaw, current, power, ovf };
  }
  readWord(reg) {
    const m = this._measure();
    switch (reg) {
      case 0: return this.config;
      case 1: return m.shuntRaw & 0xffff;
      case 2: return ((m.busRaw << 3) | 0x2 | m.ovf) & 0xffff;
      case 3: return this.calibration ? m.power & 0xffff : 0;
      case 4: return this.calibration ? m.current & 0xffff : 0;
      case 5: return this.calibration;
      default: return 0;
    }
  }
  writeWord(reg, value) {
    if (reg === 0) {
      if (value & 0x8000) { this.config = 0x399f; this.calibration = 0; } else this.config = value;
    } else if (reg === 5) this.calibration = value & 0xfffe;
  }
  state() { return { ...super.state(), config: this.config, calibration: this.calibration, shunt_ohm: this.shuntOhm }; }
}
registerDevice(INA219);

// ---------------------------------------------------------------------------------------------------
// MAX30205 body thermometer (Maxim datasheet): temperature register 0x00, LSB 1/256 degC, two's complement.
export class MAX30205 extends I2CRegisterDevice {
  static kind = 'max30205';
  regSize = 2;
  constructor(board, opts) {
    super(board, { address: 0x48, ...opts });
    this.celsius = opts.celsius ?? 36.8;
    this.frozen = null;
    this.cfg = 0;
    this.thyst = 0x4b00;
    this.tos = 0x5000;
  }
  setProp(k, v) { if (k === 'celsius') { this.celsius = Number(v); return true; } return false; }
  readWord(reg) {
    if (reg === 0) {
      if (this.stuck) { if (this.frozen === null) this.frozen = this.celsius; } else this.frozen = null;
      const t = this.frozen ?? this.celsius;
      return Math.round(t * 256) & 0xffff;
    }
    if (reg === 1) return (this.cfg << 8) | this.cfg;
    if (reg === 2) return this.thyst;
    if (reg === 3) return this.tos;
    return 0;
  }
  writeWord(reg, value) {
    if (reg === 2) this.thyst = value; else if (reg === 3) this.tos = value;
  }
  i2cWrite(bytes) {
    // the configuration register (0x01) is 8 bits wide
    if (bytes.length >= 2 && bytes[0] === 1) { this.pointer = 1; this.cfg = bytes[1]; return true; }
    return super.i2cWrite(bytes);
  }
  state() { return { ...super.state(), celsius: this.celsius }; }
}
registerDevice(MAX30205);

// ---------------------------------------------------------------------------------------------------
// Digital input driven by the host (PIR motion sensor output, a button...). Edges fire Pin IRQs.
export class DigitalInput extends Device {
  static kind = 'digital_input';
  constructor(board, opts) {
    super(board, opts);
    this.pin = opts.pin;
    this.value = opts.value ?? 0;
    board.pins.drive(this.pin, this.value);
  }
  setProp(k, v) {
    if (k === 'value' || k === 'motion') {
      this.value = v ? 1 : 0;
      if (!this.stuck && this.attached) this.board.pins.drive(this.pin, this.value);
      return true;
    }
    if (k === 'pulse_ms') { // a motion pulse: high now, low after pulse_ms of board time
      this.set({ value: 1 });
      this.board.clock.setTimeout(() => this.set({ value: 0 }), Number(v));
      return true;
    }
    return false;
  }
  set(props) {
    super.set(props);
    if ('attached' in props && !this.attached) this.board.pins.drive(this.pin, 0);
  }
  state() { return { ...super.state(), pin: this.pin, value: this.value }; }
}
registerDevice(DigitalInput);

// ---------------------------------------------------------------------------------------------------
// A voltage on an ADC pin (battery through a divider, ...).
export class AnalogSource extends Device {
  static kind = 'analog';
  constructor(board, opts) {
    super(board, opts);
    this.pin = opts.pin;
    this.divider = opts.divider ?? 1;
    this.volts = opts.volts ?? 0;
    board.adcSources.set(this.pin, this);
  }
  setProp(k, v) { if (k === 'volts') { this.volts = Number(v); return true; } return false; }
  /** Voltage at the MCU pin. */
  pinVolts() {
    if (!this.attached) return 0;
    if (this.stuck) { if (this._frozen === undefined) this._frozen = this.volts; return this._frozen / this.divider; }
    this._frozen = undefined;
    return this.volts / this.divider;
  }
  state() { return { ...super.state(), pin: this.pin, volts: this.volts, divider: this.divider }; }
}
registerDevice(AnalogSource);

// ---------------------------------------------------------------------------------------------------
// An output the firmware drives (status LED, buzzer): its trace is recorded by the board's pin bank.
export class OutputProbe extends Device {
  static kind = 'output';
  constructor(board, opts) { super(board, opts); this.pin = opts.pin; }
  state() {
    const pwm = this.board.pwm.get(this.pin);
    return { ...super.state(), pin: this.pin, value: this.board.pins.value(this.pin),
      pwm: pwm ? { freq: pwm.freq, duty_u16: pwm.duty } : null };
  }
}
registerDevice(OutputProbe);

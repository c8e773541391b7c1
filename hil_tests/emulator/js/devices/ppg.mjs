// Synthetic photoplethysmogram (PPG) of a finger probe, for the emulated MAX30102 pulse oximeter.
//
// The usual two-wavelength model: each LED's detected intensity is a large DC level modulated by the
// arterial blood-volume pulse,
//     I(t) = DC · (1 − PI · b(φ(t))) · (1 + wander·PI_ir·resp(t)) · motion(t) + noise
// with b a normalised pulse shape (systolic wave + a smaller dicrotic wave) over the cardiac phase φ,
// PI_ir the perfusion index and PI_red = R · PI_ir. R follows from the true SpO2 through the inverse of the
// emulated probe's calibration curve, SpO2 = 110 − 25 R (the textbook empirical curve; the node's default
// calibration table matches it). Respiratory sinus arrhythmia, baseline wander, white noise, motion bursts,
// low perfusion and probe-off are parameters; output is quantised and clipped like an 18-bit ADC.
// Deterministic for a given seed.
//
// This file is the one implementation of the signal: the MAX30102 model (max30102.mjs) samples it on the
// board's clock, and hil_tests/emulator/ppg_signal.py runs it as a CLI to feed host-side tests:
//     node ppg.mjs '{"seconds": 30, "fs": 100, "signal": {...}, "events": [[t_s, {...}], ...]}'
// writes little-endian int32 pairs (red, ir) to stdout.

import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../rng.mjs';

export function rForSpo2(spo2) { return (110 - spo2) / 25; }

const N_SHAPE = 512;
const SHAPE = (() => {
  const raw = [];
  for (let i = 0; i < N_SHAPE; i++) {
    const p = i / N_SHAPE;
    raw.push(Math.exp(-(((p - 0.18) / 0.075) ** 2) / 2) + 0.4 * Math.exp(-(((p - 0.5) / 0.11) ** 2) / 2));
  }
  const lo = Math.min(...raw); const hi = Math.max(...raw);
  return Float64Array.from(raw, (v) => (v - lo) / (hi - lo));
})();

export const DEFAULTS = Object.freeze({
  hr_bpm: 75, spo2: 97, perfusion_pct: 2.0, noise_counts: 25, wander: 0.5, resp_hz: 0.25, hrv: 0.02,
  dc_ir: 120000, dc_red: 95000, adc_bits: 18, seed: 1, probe_on: true, ambient_counts: 600,
  motion: [], // [{start_s, duration_s, depth, freq_hz}]
});

export class PpgSignal {
  constructor(params = {}) {
    this.p = { ...DEFAULTS };
    this.set(params);
    this.rand = mulberry32(this.p.seed);
    this.phase = this.rand();
    this.spare = null;
  }
  /** Change parameters (unknown names are an error so a typo in a test fails loudly). */
  set(params) {
    for (const [k, v] of Object.entries(params)) {
      if (!(k in DEFAULTS)) throw new Error(`ppg: unknown parameter ${k}`);
      this.p[k] = k === 'motion' ? v.map((m) => ({ depth: 0.02, freq_hz: 1.7, ...m })) : v;
    }
  }
  gauss() {
    if (this.spare !== null) { const s = this.spare; this.spare = null; return s; }
    let u = 0; while (u === 0) u = this.rand();
    const v = this.rand();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  adc(v) { return Math.max(0, Math.min((1 << this.p.adc_bits) - 1, Math.round(v))); }
  /** One (red, ir) sample at time t seconds, dt seconds after the previous one. */
  sample(t, dt) {
    const p = this.p;
    const resp = Math.sin(2 * Math.PI * p.resp_hz * t);
    const hr = p.hr_bpm * (1 + p.hrv * resp);
    this.phase = (this.phase + (hr / 60) * dt) % 1;
    if (!p.probe_on) {
      return [this.adc(p.ambient_counts + this.gauss() * p.noise_counts),
        this.adc(p.ambient_counts + this.gauss() * p.noise_counts)];
    }
    const b = SHAPE[Math.floor(this.phase * N_SHAPE) % N_SHAPE];
    const piIr = p.perfusion_pct / 100;
    const piRed = piIr * rForSpo2(p.spo2);
    let mod = 1 + p.wander * piIr * resp;
    for (const m of p.motion) {
      if (t >= m.start_s && t < m.start_s + m.duration_s) {
        const x = (t - m.start_s) / m.duration_s;
        mod *= 1 + m.depth * Math.sin(Math.PI * x) * Math.sin(2 * Math.PI * m.freq_hz * t + 0.7);
      }
    }
    const ir = p.dc_ir * (1 - piIr * b) * mod + this.gauss() * p.noise_counts;
    const red = p.dc_red * (1 - piRed * b) * mod + this.gauss() * p.noise_counts;
    return [this.adc(red), this.adc(ir)];
  }
}

function cli() {
  const req = JSON.parse(process.argv[2] || '{}');
  const fs = req.fs || 100;
  const n = Math.round((req.seconds || 10) * fs);
  const sig = new PpgSignal(req.signal || {});
  const events = (req.events || []).slice().sort((a, b) => a[0] - b[0]);
  const out = new Int32Array(n * 2);
  let e = 0;
  for (let k = 0; k < n; k++) {
    const t = k / fs;
    while (e < events.length && events[e][0] <= t) sig.set(events[e++][1]);
    const [red, ir] = sig.sample(t, 1 / fs);
    out[2 * k] = red; out[2 * k + 1] = ir;
  }
  process.stdout.write(Buffer.from(out.buffer));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) cli();

# PPG signal processing for a MAX30102-class pulse oximeter: heart rate from beat detection, SpO2 from
# the ratio of ratios through a calibration curve, perfusion index, signal-quality index, probe-off and
# no-pulse detection. Per-sample work is integer-only and allocation-free (preallocated arrays); the
# once-per-second summary allocates a handful of small ints.
#
# Units: raw samples are ADC counts (18-bit at full resolution). Internally each channel is a moving sum of
# the last _L samples ("u" units = counts x _L), inverted so that the blood-volume pulse points up. Beat
# times are in 1/16 sample (Q4). R is in Q10 (1024 = 1.0).
try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc, no-redef]
        return x


from array import array

# quality / status bits of a measurement. The low five are the protocol's L_QUALITY bits (cewire.payloads
# Q_*, after the Bluetooth PLX measurement status); the higher ones say why (docs/alarms.md).
ST_EARLY = const(0x01)  # early estimate: too few beats yet
ST_VALIDATED = const(0x02)  # enough beats, good quality
ST_QUESTIONABLE = const(0x04)  # reported, but quality is poor (low SQI, motion)
ST_INVALID = const(0x08)  # no usable value (probe off, no pulse, acquiring)
ST_UNAVAILABLE = const(0x10)  # no value at all
ST_LOW_PERFUSION = const(0x20)
ST_MOTION = const(0x40)
ST_PROBE_OFF = const(0x80)
ST_NO_PULSE = const(0x100)
ST_OVERFLOW = const(0x200)  # samples were lost (sensor FIFO overflow) in the last second
ST_SENSOR_FAULT = const(0x400)
_NONE = const(0x18)  # ST_INVALID | ST_UNAVAILABLE

_NB = const(8)  # beats kept for the median filters
_MIN_BEATS = const(4)  # intervals needed before a value is no longer an early estimate
_REJECT_RESET = const(4)  # consecutive rejected beats after which the rhythm is re-learnt
_LOW_PI_X100 = const(40)  # perfusion index below 0.40 % is "low perfusion"
_SQI_POOR = const(50)

# Calibration curve SpO2 = f(R), piecewise linear, (R Q10, SpO2 x10). This is the empirical textbook curve
# SpO2 = 110 - 25 R, which the emulated sensor is built to follow; a real probe needs its own table
# (measured against a CO-oximeter), passed as ``cal=`` to PpgProcessor.
CAL_DEFAULT = ((0, 1100), (1024, 850), (2048, 600), (4096, 100))


class PpgProcessor:
    """Feed ``add(red, ir)`` at the sample rate; read ``summary()`` once per second."""

    def __init__(self, fs=100, adc_bits=18, cal=CAL_DEFAULT):
        self.fs = fs
        self.cal = cal
        L = fs // 12
        if L < 2:
            L = 2
        self._L = L
        self._K = 7 if fs >= 100 else 6  # DC tracker time constant 2^K samples (~1.3 s)
        self._ringr = array("i", [0] * L)
        self._ringi = array("i", [0] * L)
        self._hr = array("i", [0] * L)  # moving sums one window ago (for the slope)
        self._hi = array("i", [0] * L)
        self.off_level = 1 << (adc_bits - 5)  # below this the photodiode sees no tissue
        self.sat_level = (1 << adc_bits) - (1 << (adc_bits - 8))  # ADC (nearly) saturated
        self._off_samples = fs * 3 // 4  # 0.75 s of bad contact -> probe off
        self._on_samples = fs // 2  # 0.5 s of good contact -> re-acquire
        self._iv = array("i", [0] * _NB)  # beat intervals, Q4 samples
        self._rq = array("i", [0] * _NB)  # R per beat, Q10
        self._amp = array("i", [0] * _NB)  # IR pulse amplitude per beat, u units
        self._scratch = array("i", [0] * _NB)
        self.n = 0  # samples seen
        self.lost = 0  # samples lost (reported by the driver) since the last summary
        self.fault = False
        self.probe_off = True  # not tracking a finger (acquiring, or probe off)
        self._off_seen = False  # probe off detected (as opposed to still acquiring after start)
        self._bad = 0
        self._good = 0
        self._acquired_n = 0
        self._reset_beats()

    # -- acquisition state -------------------------------------------------------------------------------
    def _reset_beats(self):
        self._nb = 0  # valid entries in the beat arrays
        self._wi = 0  # next write index
        self._armed = True  # waiting for the next upstroke (slope above threshold)
        self._tb = -1  # Q4 time of the last accepted upstroke (-1: none)
        self._slope_est = 0  # typical peak upstroke slope, u units
        self._peak = 0  # peak slope of the current upstroke
        self._rej = 0  # consecutive rejected beats
        self._rej_total = 0  # rejected beats since the last summary (motion indicator)
        self._split = False  # the beat being closed absorbed a too-short upstroke
        self._short_run = 0  # consecutive accepted beats that needed that
        self._last_ok_n = self.n  # sample index of the last accepted beat
        self._last_edge_n = self.n
        self._nz = 0  # noise estimate: mean |2nd difference| x16
        self._sp = 0  # previous IR slope
        self._clear_sums()

    def _clear_sums(self):
        # per-beat accumulators: slope products for the ratio of ratios, min/max for the amplitude
        self._sxy = 0
        self._sxx = 0
        self._syy = 0
        self._umin = 1 << 30
        self._umax = -(1 << 30)
        self._sh = 0
        e = self._slope_est
        while e > 1024:  # keep |slope| <= ~2^10 so per-beat sums stay small ints
            e >>= 1
            self._sh += 1

    def _acquire(self, red, ir):
        L = self._L
        for k in range(L):
            self._ringr[k] = red
            self._ringi[k] = ir
            self._hr[k] = -red * L
            self._hi[k] = -ir * L
        self._k = 0
        self._sr = red * L
        self._si = ir * L
        self._dcr = red << self._K
        self._dci = ir << self._K
        self._x1 = self._x2 = ir
        self._reset_beats()
        self.probe_off = False
        self._off_seen = False
        self._acquired_n = self.n

    # -- per sample ------------------------------------------------------------------------------------
    def add(self, red, ir):
        """Process one sample pair (ADC counts). Integer-only, no allocation."""
        n = self.n
        self.n = n + 1
        if ir < self.off_level or ir >= self.sat_level:
            self._good = 0
            self._bad += 1
            if self._bad >= self._off_samples:
                self.probe_off = True
                self._off_seen = True
            return
        self._bad = 0
        if self.probe_off:
            self._good += 1
            if self._good < self._on_samples:
                return
            self._acquire(red, ir)
            return
        K = self._K
        self._dcr += red - (self._dcr >> K)
        self._dci += ir - (self._dci >> K)
        # noise floor from the second difference of the raw IR (the pulse itself has little curvature)
        d2 = ir - 2 * self._x1 + self._x2
        self._x2 = self._x1
        self._x1 = ir
        if d2 < 0:
            d2 = -d2
        self._nz += ((d2 << 4) - self._nz) >> 5
        # moving sums (boxcar low-pass, linear phase), then the slope over one window length: a band-pass
        # that keeps the upstroke and rejects baseline wander
        k = self._k
        self._sr += red - self._ringr[k]
        self._si += ir - self._ringi[k]
        self._ringr[k] = red
        self._ringi[k] = ir
        u = -self._si  # blood volume up
        ur = -self._sr
        s = u - self._hi[k]
        sr = ur - self._hr[k]
        self._hi[k] = u
        self._hr[k] = ur
        k += 1
        self._k = 0 if k == self._L else k
        # per-beat sums
        sh = self._sh
        a = s >> sh
        b = sr >> sh
        self._sxx += a * a
        self._sxy += a * b
        self._syy += b * b
        if u < self._umin:
            self._umin = u
        if u > self._umax:
            self._umax = u
        # upstroke detector on the slope, with an adaptive threshold above the noise floor
        thr = self._slope_est >> 1
        floor = (self._nz * 2) // 3  # ~5 sigma of the slope noise
        if floor < 2 * self._L:
            floor = 2 * self._L
        if thr < floor:
            thr = floor
        if self._armed:
            if s > thr:
                sp = self._sp
                t = (n - 1) << 4
                if s > sp:
                    f = ((thr - sp) << 4) // (s - sp)
                    if 0 < f <= 16:
                        t += f
                self._armed = False
                self._peak = s
                self._edge(t, n)
            elif n - self._last_edge_n > self.fs * 2:
                # no upstroke for 2 s: the slope estimate may be too high, let it decay
                self._slope_est = self._slope_est * 3 // 4
                self._last_edge_n = n
        else:
            if s > self._peak:
                self._peak = s
            elif s < 0:
                self._armed = True
                self._update_slope(self._peak)
        self._sp = s

    def _update_slope(self, pk):
        est = self._slope_est
        if self._nb < 2:
            # learning: fast attack, so a dicrotic wave (a fraction of the systolic upstroke) stays below
            # the threshold once the first real upstroke was seen
            if pk > est:
                self._slope_est = pk
            return
        if pk > est * 3:
            pk = est * 3
        elif pk < est // 2:
            pk = est // 2
        self._slope_est = (3 * est + pk) >> 2

    def _edge(self, t, n):
        # An upstroke closes the beat that started at the previous upstroke.
        self._last_edge_n = n
        if self._tb >= 0:
            iv = t - self._tb
            self._beat(iv, t)
        else:
            self._tb = t
            self._clear_sums()

    def _beat(self, iv, t):
        fs16 = self.fs << 4
        lo = fs16 * 60 // 250  # 250 /min
        hi = fs16 * 60 // 30  # 30 /min
        amp = self._umax - self._umin
        ok = lo <= iv <= hi and self._sxx > 0 and self._sxy > 0
        if ok and self._nb >= _MIN_BEATS:
            med = self._median(self._iv, self._nb)
            if iv * 100 < med * 75 or iv * 100 > med * 130:
                ok = False
            else:
                am = self._median(self._amp, self._nb)
                if amp > am * 3 or amp * 3 < am:
                    ok = False
        if not ok:
            self._rej += 1
            self._rej_total += 1
            if iv < hi and self._rej < _REJECT_RESET and self._nb >= _MIN_BEATS:
                # an artefact inside a beat: keep timing and sums from the last good upstroke
                self._split = True
                return
            self._tb = t
            self._clear_sums()
            if self._rej >= _REJECT_RESET:
                # the rhythm changed for real (or never settled): learn it again
                self._nb = 0
                self._wi = 0
                self._rej = 0
            return
        self._rej = 0
        self._tb = t
        if self._split:
            # accepted only by absorbing an extra upstroke: once that keeps happening, the rate really went
            # up (e.g. doubled) and the median is stale: learn the rhythm again from this upstroke
            self._split = False
            self._short_run += 1
            if self._short_run >= 3:
                self._short_run = 0
                self._nb = 0
                self._wi = 0
                self._clear_sums()
                return
        else:
            self._short_run = 0
        dcr = self._dcr >> self._K
        dci = self._dci >> self._K
        # ratio of ratios (Q10) from the regression of the red slope on the IR slope over the beat;
        # the product may exceed a small int on a board (a bignum once per beat, not per sample)
        r = (self._sxy * dci << 10) // (self._sxx * dcr) if dcr > 0 else 0
        w = self._wi
        self._iv[w] = iv
        self._rq[w] = r
        self._amp[w] = amp
        self._wi = (w + 1) % _NB
        if self._nb < _NB:
            self._nb += 1
        self._last_ok_n = self.n
        self._clear_sums()

    def _median(self, src, n):
        s = self._scratch
        for i in range(n):  # insertion sort into the scratch array (n <= 8)
            v = src[i]
            j = i
            while j > 0 and s[j - 1] > v:
                s[j] = s[j - 1]
                j -= 1
            s[j] = v
        return s[n >> 1]

    def _trimmed_mean(self, src, n, pct):
        # mean of the entries within +-pct % of the median, and how many there were
        med = self._median(src, n)
        tol = med * pct // 100
        if tol < 0:
            tol = -tol
        tot = 0
        cnt = 0
        for i in range(n):
            v = src[i]
            if med - tol <= v <= med + tol:
                tot += v
                cnt += 1
        if cnt == 0:
            return med, 0
        return tot // cnt if tot >= 0 else -((-tot) // cnt), cnt

    def spo2_x10(self, r_q10):
        """Calibration curve: R (Q10) -> SpO2 in 0.1 %, clipped to 0..100 %."""
        cal = self.cal
        i = 1
        while i < len(cal) - 1 and r_q10 > cal[i][0]:
            i += 1
        r0, s0 = cal[i - 1]
        r1, s1 = cal[i]
        s = s0 + (s1 - s0) * (r_q10 - r0) // (r1 - r0)
        if s > 1000:
            return 1000
        return s if s > 0 else 0

    # -- once per second ---------------------------------------------------------------------------------
    def summary(self):
        """Return (hr_x10, spo2_x10, pi_x100, sqi, status); values are -1 when not available."""
        status = 0
        if self.lost:
            status |= ST_OVERFLOW
            self.lost = 0
        if self.fault:
            self._rej_total = 0
            return -1, -1, -1, 0, status | ST_SENSOR_FAULT | _NONE
        if self.probe_off:
            self._rej_total = 0
            if self._off_seen:
                status |= ST_PROBE_OFF
            return -1, -1, -1, 0, status | _NONE
        rej = self._rej_total
        self._rej_total = 0
        nb = self._nb
        since = self.n - self._last_ok_n
        med_iv = self._median(self._iv, nb) if nb else 0
        gap = med_iv * 5 // 32 if nb else 0  # 2.5 median intervals, in samples
        if gap < self.fs * 4:
            gap = self.fs * 4
        if since > gap:
            # acquisition grace: the first beats need a few seconds
            if self.n - self._acquired_n > self.fs * 6:
                status |= ST_NO_PULSE
            return -1, -1, -1, 0, status | _NONE
        if nb < 2:
            return -1, -1, -1, 0, status | _NONE | ST_EARLY
        iv, n_iv = self._trimmed_mean(self._iv, nb, 12)
        r, n_r = self._trimmed_mean(self._rq, nb, 10)
        hr_x10 = (600 * (self.fs << 4) + iv // 2) // iv
        spo2 = self.spo2_x10(r)
        amp = self._median(self._amp, nb)
        dci = self._dci >> self._K
        pi = amp * 10000 // (self._L * dci) if dci > 0 else 0
        sqi = (n_iv + n_r) * 50 // nb - rej * 15
        if sqi < 0:
            sqi = 0
        if nb < _MIN_BEATS:
            status |= ST_EARLY
        if pi < _LOW_PI_X100:
            status |= ST_LOW_PERFUSION
        if rej >= 2:
            status |= ST_MOTION
        if sqi < _SQI_POOR or rej >= 2:
            status |= ST_QUESTIONABLE
        elif nb >= _MIN_BEATS:
            status |= ST_VALIDATED
        return hr_x10, spo2, pi, sqi, status

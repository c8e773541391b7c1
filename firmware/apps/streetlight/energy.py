"""Energy, burn hours and switch counts of the luminaire, integrated from meter samples and kept on flash.

Integration is in integers: power (mW) x time (ms) = microjoules, carried into whole milliwatt-hours, so a
year of samples neither loses precision (single-precision floats would) nor allocates. Samples are combined
with the trapezoid rule. :meth:`Energy.save` writes atomically (temporary file + rename) so a power cut leaves
the previous or the new counters, never a broken file; at most one save interval is lost.
"""

from node.config import ConfigError, read_json, save_json

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


_UJ_PER_MWH = const(3600000)
PATH = "/streetlight_energy.json"


class Energy:
    """Counters of one luminaire; burn time and switch-ons follow the *commanded* state (a deeply dimmed LED
    draws little more than its driver's idle power, so power alone cannot tell lit from dark)."""

    def __init__(self):
        self.mwh = 0  # energy in milliwatt-hours
        self.burn_s = 0  # seconds the lamp burnt
        self.switches = 0  # dark -> lit transitions
        self._uj = 0  # microjoules not yet carried into mwh
        self._burn_ms = 0
        self._last_mw = -1  # previous sample's power, -1 before the first
        self._lit = False

    def add(self, power_mw, dt_ms, lit):
        """Account ``dt_ms`` since the previous sample, which read ``power_mw`` now with the lamp
        commanded on (``lit``) or off."""
        if self._last_mw < 0 or dt_ms <= 0 or dt_ms > 600000:
            self._last_mw = power_mw  # first sample, or a gap we cannot bridge honestly
            self._lit = lit
            return
        self._uj += (self._last_mw + power_mw) * dt_ms // 2
        if self._uj >= _UJ_PER_MWH:
            n = self._uj // _UJ_PER_MWH
            self.mwh += n
            self._uj -= n * _UJ_PER_MWH
        if self._lit:  # the lamp burnt since the previous sample
            self._burn_ms += dt_ms
            if self._burn_ms >= 1000:
                self.burn_s += self._burn_ms // 1000
                self._burn_ms %= 1000
        if lit and not self._lit:
            self.switches += 1
        self._lit = lit
        self._last_mw = power_mw

    def restore(self, data):
        """Take counters from what :meth:`save` wrote; bad data is ignored (counters stay as they are)."""
        try:
            mwh, uj, burn, sw = int(data["mwh"]), int(data["uj"]), int(data["burn_s"]), int(data["switches"])
        except (KeyError, TypeError, ValueError):
            return False
        if min(mwh, uj, burn, sw) < 0:
            return False
        self.mwh, self._uj, self.burn_s, self.switches = mwh, uj, burn, sw
        return True

    def save(self, path=PATH):
        save_json(path, {"mwh": self.mwh, "uj": self._uj, "burn_s": self.burn_s, "switches": self.switches})

    def load(self, path=PATH):
        """Restore from ``path`` (or its temporary twin after a cut during a save); False if not valid."""
        try:
            data = read_json(path)
        except ConfigError:
            return False
        return data is not None and self.restore(data)

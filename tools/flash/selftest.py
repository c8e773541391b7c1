"""The role's self-test, run on the board through the raw REPL after the boot was confirmed.

An app may bring its own (``<role>.selftest()``, see docs/flashing.md); otherwise the tool runs the
built-in checks below with the node's own drivers and pin map (the active slot's ``lib`` is on
``sys.path`` after boot.py): every sensor of the role answers on I2C, a streetlight's lamp draws power at
100 % and stops when switched off (the app sets its program level again when the node is reset to run),
a medical node's thermometer reads a plausible value and its pulse oximeter reports its part id.
Each check is ``{"ok": bool, ...details}``; the flow fails with exit code 12 when one is not ok.
"""

from __future__ import annotations

_COMMON = """\
import board,machine,time,json
_i=machine.I2C(board.I2C_ID,scl=machine.Pin(board.I2C_SCL),sda=machine.Pin(board.I2C_SDA),freq=board.I2C_FREQ)
_f=_i.scan();r={}
def _chk(name,addr):r[name]={'ok':addr in _f,'addr':addr}
"""

STREETLIGHT = _COMMON + """\
_chk('light_sensor',board.ADDR_BH1750);_chk('energy_meter',board.ADDR_INA219)
if r['energy_meter']['ok']:
 from drivers.ina219 import INA219
 _m=INA219(_i,board.ADDR_INA219);_m.start()
 _p=machine.PWM(machine.Pin(board.PIN_LAMP_PWM),freq=1000,duty_u16=65535)
 _s=machine.Pin(board.PIN_LAMP_RELAY,machine.Pin.OUT,value=1)
 time.sleep_ms(400);_m.read();_on=_m.power_mw
 _p.duty_u16(0);_s.value(0)
 time.sleep_ms(400);_m.read();_off=_m.power_mw
 r['lamp_100']={'ok':_on>=1000 and _on>4*_off,'on_mw':_on,'off_mw':_off}
if r['light_sensor']['ok']:
 from drivers.bh1750 import BH1750
 _l=BH1750(_i,board.ADDR_BH1750);_l.start();time.sleep_ms(200);_x=_l.read()
 r['lux']={'ok':_x is not None and _x>=0,'deci_lux':_x}
print(json.dumps(r))
"""

MEDICAL = _COMMON + """\
_chk('thermometer',board.ADDR_MAX30205);_chk('pulse_oximeter',board.ADDR_MAX30102)
if r['thermometer']['ok']:
 from drivers.max30205 import MAX30205
 _t=MAX30205(_i,board.ADDR_MAX30205);_t.start();time.sleep_ms(100);_c=_t.read_centi()
 r['temperature']={'ok':1000<=_c<=4500,'centi_c':_c}
if r['pulse_oximeter']['ok']:
 _b=bytearray(1);_i.readfrom_mem_into(board.ADDR_MAX30102,0xFF,_b)
 r['oximeter_part']={'ok':_b[0]==0x15,'part_id':_b[0]}
print(json.dumps(r))
"""

BUILTIN: dict[str, str] = {"streetlight": STREETLIGHT, "medical": MEDICAL}


def failed_checks(result: dict) -> list[str]:
    """Names of the checks that are ``False`` or ``{"ok": False, ...}``."""
    return [k for k, v in result.items() if v is False or (isinstance(v, dict) and v.get("ok") is False)]

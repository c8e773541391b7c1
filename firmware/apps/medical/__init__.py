# Medical vital-signs node: PPG pulse oximetry (MAX30102), body temperature (MAX30205), battery, IEC 60601-1-8
# style alarms on a status LED and a buzzer, vitals and alarm events to the gateway over the cewire link.
# ``medical.main()`` is the app coroutine started by main.py; the modules are imported lazily so that tests
# can use the pure logic (ppg, alarms, profiles, annunciator) on their own.


async def main():
    from medical.app import run

    await run()

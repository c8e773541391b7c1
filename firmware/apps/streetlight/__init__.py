"""Streetlight controller node: dimming programs, astronomical clock, light sensor, overrides, energy and
faults, reported to the gateway over the cewire link. ``streetlight.main()`` is the app coroutine started by
the boot manager; the logic modules (curves, astro, schedule, overrides, faults) import nothing from the
hardware, so tests use them on their own. Docs: docs/streetlight.md.
"""


async def main():
    from streetlight.app import main as run

    await run()

# Runs after boot.py on a normal start (not in the raw REPL): the boot manager counts this boot, rolls back a
# new app that keeps failing, and starts <role>.main() from the active slot (or safe mode). Then it leaves the
# heap (its code would stay there as long as the app runs, for nothing): what the running app still needs of
# it is here -- the confirmation after CONFIRM_S seconds -- or is imported again when the app fails.
import asyncio
import sys


async def confirm_later(delay_s, state):
    # the app ran delay_s seconds without an exception: /boot.json as bootmgr.boot() prepared it (no failed
    # boot counted, a trial made permanent), replaced atomically by the node library the app has loaded already
    await asyncio.sleep(delay_s)
    from node.config import save_json  # type: ignore[import-not-found]  # /lib/node or the app's slot

    save_json("/boot.json", state)
    print("bootmgr: app confirmed")


async def run():
    import bootmgr  # type: ignore[import-not-found]  # /lib/bootmgr.py on the board

    app, confirmed = bootmgr.boot()
    delay_s = bootmgr.CONFIRM_S
    del bootmgr, sys.modules["bootmgr"]
    if app is None:
        return
    if confirmed is None:  # safe mode: nothing to confirm
        await app
        return
    asyncio.create_task(confirm_later(delay_s, confirmed))
    try:
        await app
    except Exception as e:  # Ctrl-C (KeyboardInterrupt) is none: the REPL wants the board
        __import__("bootmgr").failed(e)  # loaded again (dropped above): reports and resets


asyncio.run(run())

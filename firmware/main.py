# Runs after boot.py on a normal start (not in the raw REPL): the boot manager counts this boot,
# rolls back a new app that keeps failing, and runs <role>.main() from the active slot (or safe mode).
import asyncio

import bootmgr  # type: ignore[import-not-found]  # /lib/bootmgr.py on the board

asyncio.run(bootmgr.start())

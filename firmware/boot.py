# Runs at every reset, also before the raw REPL: make the active app slot importable. Counts nothing.
# Never let a problem here block the REPL the flashing tool needs.
try:
    import bootmgr  # type: ignore[import-not-found]  # /lib/bootmgr.py on the board

    bootmgr.prepare_path()
    del bootmgr  # boot.py and main.py share their globals: main.py drops the module once the app runs
except Exception as e:  # noqa: BLE001
    print("boot.py:", e)

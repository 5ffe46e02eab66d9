"""Run firmware unit tests inside MicroPython (there is no unittest there).

    micropython runner.py mp_test_link.py --list      print the test names, one a line
    micropython runner.py mp_test_link.py [NAME ...]   run them; one "PASS name" / "FAIL name"
                                                       line each, a traceback after a failure

A test is a module-level function named test_*; a coroutine function is run with asyncio.run.
Exit status 1 when any test failed.
"""

import sys

import asyncio


def _tests(module):
    names = [n for n in dir(module) if n.startswith("test_")]
    names.sort()
    return names


def main(argv):
    path = argv[1]
    modname = path.rsplit("/", 1)[-1]
    if modname.endswith(".py"):
        modname = modname[:-3]
    module = __import__(modname)
    if "--list" in argv:
        for name in _tests(module):
            print(name)
        return 0
    wanted = argv[2:] or _tests(module)
    failed = 0
    for name in wanted:
        fn = getattr(module, name)
        try:
            res = fn()
            if res is not None and hasattr(res, "send"):
                asyncio.run(res)
            print("PASS", name)
        except Exception as e:  # report every failure and go on with the next test
            failed += 1
            print("FAIL", name)
            sys.print_exception(e)
    return 1 if failed else 0


sys.exit(main(sys.argv))

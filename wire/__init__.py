"""Wire formats shared by the firmware (MicroPython) and hubd (CPython).

Everything in this package is written in the subset of Python both interpreters run, so each
format has exactly one definition that both ends import.
"""

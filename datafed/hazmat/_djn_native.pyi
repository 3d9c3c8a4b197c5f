# Types of the C extension built from _djn_native.c (setup.py); see datafed.hazmat._djn.
Buffer = bytes | bytearray | memoryview

def build(n: Buffer, base: Buffer, rows: int, window: int, /) -> bytearray: ...
def power(
    table: Buffer, n: Buffer, rows: int, window: int, exponent: Buffer, shift: Buffer = ..., /
) -> bytes: ...

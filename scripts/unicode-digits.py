#!/usr/bin/env python3
"""Prints the table of Unicode decimal digits that phones are normalized
with: the zero of every run of ten characters of general category Nd
other than ASCII's, as Rust (crates/domain/src/digits.rs), and as SQL
(migrations/V6__search_normalization.sql): ten regexp_replace passes, the
one for digit d with a bracket of every run's digit d.

Run once per Unicode version, by hand, and paste its output over the old
table in both files (a test holds Rust and SQL to agreement on every
digit). Python's own unicodedata lags Unicode (3.11 has 14.0.0), so it
reads unicodedata2, the same database at the newest version:

    python3 -m venv /tmp/ucd && /tmp/ucd/bin/pip install unicodedata2==18.0.0
    /tmp/ucd/bin/python scripts/unicode-digits.py rust   # or: sql
"""

import sys

import unicodedata2 as ucd


def zeros():
    """The zeros of the non-ASCII Nd runs, checking that each is a run of ten."""
    found = []
    for code in range(0x80, 0x110000):
        ch = chr(code)
        if ucd.category(ch) == "Nd" and ucd.digit(ch) == 0:
            for d in range(10):
                digit = chr(code + d)
                assert ucd.category(digit) == "Nd" and ucd.digit(digit) == d, hex(code + d)
            found.append(code)
    every_nd = sum(1 for c in range(0x80, 0x110000) if ucd.category(chr(c)) == "Nd")
    assert every_nd == 10 * len(found), "an Nd character outside a run of ten"
    return found


def main(form):
    runs = zeros()
    if form == "rust":
        print(f"// Unicode {ucd.unidata_version}: {len(runs)} runs")
        for zero in runs:
            print(f"    '\\u{{{zero:04X}}}', // {ucd.name(chr(zero))}")
        return
    print(f"-- Unicode {ucd.unidata_version}: {len(runs)} runs")
    escape = lambda c: f"\\u{c:04X}" if c <= 0xFFFF else f"\\U{c:08X}"
    for d in range(10):
        bracket = "".join(escape(zero + d) for zero in runs)
        close = ")," if d < 9 else ")"
        print(f"        '[{bracket}]', '{d}', 'g'{close}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "rust")

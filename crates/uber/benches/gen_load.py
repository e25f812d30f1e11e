#!/usr/bin/env python3
"""Writes RESP for loading N members into a geo key, 100 per GEOADD, spread
uniformly over lon -74..-73, lat 40..41 (the square redis-benchmark's
`-73.__rand_int__ 40.__rand_int__` queries fall into). Pipe it with
`redis-cli -p PORT --pipe`. Usage: gen_load.py KEY N SEED > file"""
import random
import sys

key, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
out = sys.stdout.buffer
kb = key.encode()
for start in range(0, n, 100):
    count = min(100, n - start)
    args = [b"GEOADD", kb]
    for i in range(start, start + count):
        args += [b"%.9f" % (-74 + rng.random()), b"%.9f" % (40 + rng.random()), b"driver:%d" % i]
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))

#!/usr/bin/env python3
"""Independent pure-Python MurmurHash3 x86_32 and Unleash's normalizedValue,
used to compute the expected buckets in test_engine.c.

    python3 t/unit/murmur3.py ID GROUP [NORMALIZER [SEED]]
"""
import sys


def murmur3_32(data: bytes, seed: int = 0) -> int:
    c1, c2 = 0xCC9E2D51, 0x1B873593
    mask = 0xFFFFFFFF
    h = seed & mask
    n = len(data) // 4
    for i in range(n):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[4 * n:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def normalized_value(ident: str, group: str, normalizer: int = 100, seed: int = 0) -> int:
    return murmur3_32(f"{group}:{ident}".encode(), seed) % normalizer + 1


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) < 2:
        sys.exit(__doc__)
    print(normalized_value(a[0], a[1], int(a[2]) if len(a) > 2 else 100,
                           int(a[3]) if len(a) > 3 else 0))

/*
 * sim_rng.c - the simulator's only source of randomness: xoshiro256**
 * (Blackman and Vigna), seeded through splitmix64. Never rand(), never the
 * clock, so a seed reproduces a run exactly.
 */
#include "sim.h"

static uint64_t sim_rng_splitmix(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t sim_rng_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void sim_rng_seed(struct sim_rng* rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        rng->s[i] = sim_rng_splitmix(&x);
    }
    if ((rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]) == 0) {
        rng->s[0] = 1; /* xoshiro must not start from all zeros */
    }
}

uint64_t sim_rng_next(struct sim_rng* rng) {
    uint64_t* s = rng->s;
    uint64_t result = sim_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sim_rng_rotl(s[3], 45);
    return result;
}

uint64_t sim_rng_below(struct sim_rng* rng, uint64_t n) {
    if (n == 0) {
        return 0;
    }
    /* Rejection sampling keeps the distribution exactly uniform. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = sim_rng_next(rng);
    } while (x >= limit);
    return x % n;
}

uint64_t sim_rng_range(struct sim_rng* rng, uint64_t lo, uint64_t hi) {
    return lo + sim_rng_below(rng, hi - lo + 1);
}

bool sim_rng_chance(struct sim_rng* rng, uint32_t bp) {
    return bp > 0 && sim_rng_below(rng, 10000) < bp;
}

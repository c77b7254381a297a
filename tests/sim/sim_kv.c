/*
 * sim_kv.c - the simulated state machine: SIM_MAX_KEYS registers, each
 * holding the id of the last write applied to it. A write's entry data is
 * its id (8 bytes, little endian), its key (1 byte) and padding derived
 * from the id, so every byte can be checked.
 */
#include <string.h>

#include "sim.h"

static uint64_t sim_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint32_t sim_kv_encode(const struct sim_write_data* w,
                       uint32_t pad,
                       uint8_t* buf) {
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)(w->write_id >> (8 * i));
    }
    buf[8] = (uint8_t)w->key;
    for (uint32_t i = 0; i < pad; i++) {
        buf[SIM_WRITE_HDR + i] = (uint8_t)(w->write_id * 31 + i);
    }
    return SIM_WRITE_HDR + pad;
}

bool sim_kv_decode(const uint8_t* data,
                   uint32_t len,
                   struct sim_write_data* out) {
    if (data == NULL || len < SIM_WRITE_HDR) {
        return false;
    }
    uint64_t id = 0;
    for (int i = 0; i < 8; i++) {
        id |= (uint64_t)data[i] << (8 * i);
    }
    if (id == 0 || data[8] >= SIM_MAX_KEYS) {
        return false;
    }
    for (uint32_t i = 0; i < len - SIM_WRITE_HDR; i++) {
        if (data[SIM_WRITE_HDR + i] != (uint8_t)(id * 31 + i)) {
            return false;
        }
    }
    out->write_id = id;
    out->key = data[8];
    return true;
}

bool sim_kv_apply(struct sim_kv* kv, const struct raft_entry* e) {
    if (e->type != RAFT_ENTRY_NORMAL) {
        return true;
    }
    struct sim_write_data w;
    if (!sim_kv_decode(e->data, e->len, &w)) {
        return false;
    }
    kv->slot[w.key].write_id = w.write_id;
    kv->slot[w.key].index = e->index;
    return true;
}

uint64_t sim_kv_hash(const struct sim_kv* kv) {
    uint64_t h = 0;
    for (uint64_t k = 0; k < SIM_MAX_KEYS; k++) {
        const struct sim_kv_slot* sl = &kv->slot[k];
        h += sim_mix(k * 0x100000001b3ULL ^ sim_mix(sl->write_id) ^
                     sim_mix(sl->index + 0x51ed));
    }
    return h;
}

uint64_t sim_entry_hash(const struct raft_entry* e) {
    uint64_t h = 0xcbf29ce484222325ULL ^ e->type;
    for (uint32_t i = 0; i < e->len; i++) {
        h = (h ^ e->data[i]) * 0x100000001b3ULL;
    }
    return sim_mix(h ^ e->len);
}

/*
 * sim_store_test.c - checks the modelled disk of store_mem that the
 * simulator relies on: volatile vs durable writes, suffix replacement,
 * crash, compaction, snapshot install and the raft_storage view.
 * Exits 0 when every check holds, else prints the failed one and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_mem.h"

#define SIM_CHECK(cond)                                                      \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* Writes entries [lo, hi) of term `term`, data "t<term>i<index>". */
static int sim_write(struct store* st,
                     raft_index lo,
                     raft_index hi,
                     raft_term term) {
    struct raft_entry ents[128];
    char bufs[128][32];
    size_t n = 0;
    for (raft_index i = lo; i < hi; i++, n++) {
        int len = snprintf(bufs[n], sizeof(bufs[n]), "t%llui%llu",
                           (unsigned long long)term, (unsigned long long)i);
        ents[n] = (struct raft_entry){.term = term,
                                      .index = i,
                                      .type = RAFT_ENTRY_NORMAL,
                                      .len = (uint32_t)len,
                                      .data = (const uint8_t*)bufs[n]};
    }
    return st->ops->append(st->ctx, ents, n);
}

static void sim_test_durability(void) {
    struct store_mem* s;
    struct store st;
    struct raft_storage v;
    raft_index di;
    raft_term dt;
    SIM_CHECK(store_mem_init(0, &s) == RAFT_OK);
    store_mem_store(s, &st);
    st.ops->storage(st.ctx, &v);
    SIM_CHECK(v.first_index(v.ctx) == 1 && v.last_index(v.ctx) == 0);
    SIM_CHECK(sim_write(&st, 1, 11, 1) == RAFT_OK);
    SIM_CHECK(v.last_index(v.ctx) == 0); /* nothing durable yet */
    SIM_CHECK(store_mem_sync_to(s, 5, &di, &dt) == RAFT_OK);
    SIM_CHECK(di == 5 && dt == 1 && v.last_index(v.ctx) == 5);
    struct raft_hard_state hs = {.term = 2, .vote = 3, .commit = 4};
    SIM_CHECK(st.ops->save_hard_state(st.ctx, &hs) == RAFT_OK);
    store_mem_crash(s);
    SIM_CHECK(store_mem_last_index(s) == 5);
    SIM_CHECK(store_mem_hard_state(s).term == 0); /* vote lost */
    SIM_CHECK(st.ops->save_hard_state(st.ctx, &hs) == RAFT_OK);
    store_mem_sync_hard_state(s);
    store_mem_crash(s);
    SIM_CHECK(store_mem_hard_state(s).vote == 3);
    /* Replacing from 4 lowers the durable index to 3. */
    SIM_CHECK(sim_write(&st, 4, 8, 2) == RAFT_OK);
    SIM_CHECK(store_mem_durable_index(s) == 3);
    SIM_CHECK(st.ops->sync(st.ctx, &di, &dt) == RAFT_OK);
    SIM_CHECK(di == 7 && dt == 2);
    struct raft_entry e[8];
    size_t n;
    SIM_CHECK(v.entries(v.ctx, 3, 8, 1000, e, &n) == RAFT_OK && n == 5);
    SIM_CHECK(e[0].term == 1 && e[1].term == 2 &&
              memcmp(e[1].data, "t2i4", 4) == 0);
    SIM_CHECK(v.entries(v.ctx, 3, 8, 0, e, &n) == RAFT_OK && n == 1);
    SIM_CHECK(v.entries(v.ctx, 3, 9, 1000, e, &n) == RAFT_EINVAL);
    SIM_CHECK(sim_write(&st, 9, 10, 2) == RAFT_EINVAL); /* gap */
    store_mem_close(s);
}

static void sim_test_snapshots(void) {
    struct store_mem* s;
    struct store st;
    struct raft_storage v;
    raft_index di;
    raft_term dt;
    raft_term t;
    SIM_CHECK(store_mem_init(100, &s) == RAFT_OK);
    store_mem_store(s, &st);
    st.ops->storage(st.ctx, &v);
    for (raft_index i = 1; i < 400; i += 40) {
        SIM_CHECK(sim_write(&st, i, i + 40, 1 + i / 100) == RAFT_OK);
        SIM_CHECK(st.ops->sync(st.ctx, &di, &dt) == RAFT_OK);
        struct raft_snapshot_meta m = {.index = i + 30, .term = dt};
        SIM_CHECK(st.ops->compact(st.ctx, &m, i + 25) == RAFT_OK);
        SIM_CHECK(v.first_index(v.ctx) == i + 26);
        SIM_CHECK(v.term(v.ctx, i + 25, &t) == RAFT_OK && t == dt);
        SIM_CHECK(v.term(v.ctx, i + 24, &t) == RAFT_ECOMPACTED);
    }
    SIM_CHECK(sim_write(&st, 400, 501, 9) == RAFT_ENOMEM); /* bounded */
    struct raft_snapshot_meta snap = {.index = 1000, .term = 7};
    SIM_CHECK(st.ops->install_snapshot(st.ctx, &snap) == RAFT_OK);
    SIM_CHECK(store_mem_data_bytes(s) == 0);
    SIM_CHECK(v.first_index(v.ctx) == 1001 && v.last_index(v.ctx) == 1000);
    SIM_CHECK(v.term(v.ctx, 1000, &t) == RAFT_OK && t == 7);
    SIM_CHECK(sim_write(&st, 1001, 1003, 7) == RAFT_OK);
    store_mem_crash(s);
    struct raft_start_state start;
    SIM_CHECK(st.ops->load(st.ctx, &start) == RAFT_OK);
    SIM_CHECK(start.snapshot.index == 1000 && start.applied == 1000);
    SIM_CHECK(store_mem_last_index(s) == 1000);
    store_mem_close(s);
}

int main(void) {
    sim_test_durability();
    sim_test_snapshots();
    printf("store_mem: ok\n");
    return 0;
}

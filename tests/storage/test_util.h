/*
 * test_util.h - helpers shared by the storage tests and the benchmark:
 * temporary directories, a deterministic PRNG, entry and command builders.
 */
#ifndef SKEIN_TEST_STORAGE_UTIL_H
#define SKEIN_TEST_STORAGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "skein.pb-c.h"

/**
 * Creates a fresh directory under $TMPDIR (or /tmp) named
 * skein-<tag>-XXXXXX. Returns the malloc'd path (caller frees, removes it
 * with tu_rmtree); aborts on failure.
 */
char* tu_mkdtemp(const char* tag);

/** Removes `path` recursively and frees it. Accepts NULL. */
void tu_rmtree(char* path);

/** Returns malloc'd "<dir>/<name>" (caller frees); aborts when out of memory.
 */
char* tu_path(const char* dir, const char* name);

/** splitmix64 step: returns the next value of *state. */
uint64_t tu_rand(uint64_t* state);

/** A uniform value in [0, n) (0 when n == 0). */
uint64_t tu_below(uint64_t* state, uint64_t n);

/**
 * Fills `e` with a NORMAL entry (index, term) whose data is `len` bytes of a
 * pattern derived from index and term, written into buf (>= len bytes).
 */
void tu_entry(struct raft_entry* e,
              raft_index index,
              raft_term term,
              uint8_t* buf,
              uint32_t len);

/** True if `e`'s data is the pattern tu_entry writes for its index/term. */
bool tu_entry_ok(const struct raft_entry* e);

/** Packs `cmd` into a malloc'd buffer (caller frees); sets *len. */
uint8_t* tu_pack(Skein__Command* cmd, uint32_t* len);

/**
 * Packs a skein.Command creating entry `id` with `key` and `value` and the
 * given request id (NULL = none) into a malloc'd buffer (caller frees).
 * Sets *len. source_node = 1, created_at = 1000 + strlen(id).
 */
uint8_t* tu_cmd_create(const char* request_id,
                       const char* id,
                       const char* key,
                       const char* value,
                       uint32_t* len);

/**
 * Packs an update of `id` (key NULL = keep, value NULL = keep,
 * expected_seq < 0 = unconditional). Malloc'd; caller frees.
 */
uint8_t* tu_cmd_update(const char* request_id,
                       const char* id,
                       const char* key,
                       const char* value,
                       int64_t expected_seq,
                       uint32_t* len);

/** Packs a delete of `id`. Malloc'd; caller frees. */
uint8_t* tu_cmd_delete(const char* request_id, const char* id, uint32_t* len);

/** Packs a delete of `id` conditional on its seq. Malloc'd; caller frees. */
uint8_t* tu_cmd_delete_cas(const char* request_id,
                           const char* id,
                           uint64_t expected_seq,
                           uint32_t* len);

/**
 * Fills `e` with a pseudo-random command entry for (index, term), the same
 * on every call: mostly creates ("id-<index>", key "k<index % 50>"), some
 * updates (with and without expected seq) and deletes of earlier ids,
 * retries of earlier request ids, malformed data, NOOP and CONF entries.
 * The data is malloc'd into *owned (caller frees; may be NULL).
 */
void tu_gen_entry(raft_index index,
                  raft_term term,
                  struct raft_entry* e,
                  uint8_t** owned);

/** Reads VmRSS, VmHWM, RssAnon and RssFile (KiB) of this process. */
void tu_rss_kib(long* rss, long* hwm, long* anon, long* file);

/** Seconds of CLOCK_MONOTONIC. */
double tu_now(void);

#endif /* SKEIN_TEST_STORAGE_UTIL_H */

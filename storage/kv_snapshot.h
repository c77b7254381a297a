/*
 * kv_snapshot.h - snapshots of the state machine: create, stream in
 * bounded chunks, install.
 *
 * A snapshot is a compacted, consistent copy of the `state/` environment
 * (mdb_env_copyfd2 with MDB_CP_COMPACT, which copies from one read
 * transaction): one LMDB file whose meta records say at which applied index
 * and term it was taken, with the membership, seq counter, count and hash.
 * It carries the idempotency table, so a retry answered before the
 * snapshot is still answered after it.
 *
 * Create (any thread, concurrently with kv_apply_batch): the copy is
 * written to <path>.tmp, fsync'ed, renamed to <path>, and its directory
 * fsync'ed; its metadata is read back from the copy, so it is exactly the
 * applied index the copy holds.
 *
 * Stream: a reader hands out the file in chunks of at most
 * KV_SNAPSHOT_CHUNK_MAX bytes at any offset (the transport sends them in
 * InstallSnapshotChunk messages and can resume).
 *
 * Install (the apply thread, no reader inside kv): a writer receives the
 * chunks in order into <state>.incoming/data.mdb (a repeated chunk is
 * accepted, a chunk beyond the received bytes refused); finish() fsyncs the
 * file and the directory, opens the copy and verifies it (format, meta,
 * every entry's decoding and key index, count and hash recomputed), marks
 * it READY, closes kv's environment, swaps the directories atomically
 * (renameat2 RENAME_EXCHANGE; where unsupported, two renames that kv_open
 * completes or rolls back after a crash), fsyncs the parent directory and
 * reopens kv on the new state. A crash at any point leaves either the old
 * or the new state, never a mix.
 *
 * The log is not touched here: after installing, the driver installs the
 * snapshot metadata in the log store (store_ops.install_snapshot) with the
 * info returned. store_recover() repairs the order if a crash falls in
 * between.
 */
#ifndef SKEIN_KV_SNAPSHOT_H
#define SKEIN_KV_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_state.h"

/** Largest chunk a reader returns or a writer accepts. */
#define KV_SNAPSHOT_CHUNK_MAX ((size_t)4 << 20)

/** What a snapshot holds. */
struct kv_snapshot_info {
    struct kv_stats stats;            /* applied index/term, counters */
    uint64_t size;                    /* bytes of the snapshot file */
    uint8_t conf[RAFT_CONF_DATA_MAX]; /* membership bytes (CONF data) */
    size_t conf_len;                  /* bytes at conf, 0 = none */
};

/**
 * Writes a snapshot of kv's committed state to the file `path` (see the
 * header comment) and fills *info (may be NULL). Returns STORE_OK, or
 * STORE_EDISKFULL / STORE_EIO with a message in errmsg
 * (STORE_ERRMSG_SIZE bytes, may be NULL); no file is left at `path` then.
 */
int kv_snapshot_create(struct kv_state* kv,
                       const char* path,
                       struct kv_snapshot_info* info,
                       char* errmsg);

/**
 * Reads the metadata of the snapshot file `path` (opened read-only).
 * Returns STORE_OK, or STORE_ECORRUPT / STORE_EIO with a message.
 */
int kv_snapshot_read_info(const char* path,
                          struct kv_snapshot_info* info,
                          char* errmsg);

/**
 * Verifies the snapshot file `path` without changing it (a restore upload
 * before it is replicated): the LMDB file holds every page its meta pages
 * refer to (a truncated file is refused before it is mapped), the format
 * and meta records are Skein's, every entry decodes, the key index matches
 * the entries, the idempotency records decode, and count and hash
 * recomputed match the stored ones. The file is read in a child process
 * (fork): LMDB 0.9 follows page numbers without bounds checks, so a
 * damaged file may crash its reader, and that must not be the caller.
 * Fills *info (may be NULL) and *checksum (may be NULL) with the XXH64
 * (seed KV_RESTORE_CHECKSUM_SEED) of the whole file. Blocks until done.
 * Returns STORE_OK, STORE_ECORRUPT (not a valid snapshot, or it crashed
 * the reader; message in errmsg), STORE_ENOMEM or STORE_EIO.
 */
int kv_snapshot_verify_file(const char* path,
                            struct kv_snapshot_info* info,
                            uint64_t* checksum,
                            char* errmsg);

struct kv_snapshot_verifier; /* opaque */

/**
 * Starts kv_snapshot_verify_file's check without waiting for it: the
 * caller polls (kv_snapshot_verify_poll, e.g. once per tick, or when
 * kv_snapshot_verifier_fd is readable). Returns STORE_OK and sets *out
 * (close it with kv_snapshot_verify_close), or STORE_ENOMEM / STORE_EIO.
 */
int kv_snapshot_verify_begin(const char* path,
                             struct kv_snapshot_verifier** out,
                             char* errmsg);

/**
 * Sets *done once the verdict is known, and then returns it as
 * kv_snapshot_verify_file does (filling *info and *checksum on STORE_OK);
 * while the check runs, *done = false and STORE_OK. Never blocks.
 */
int kv_snapshot_verify_poll(struct kv_snapshot_verifier* v,
                            bool* done,
                            struct kv_snapshot_info* info,
                            uint64_t* checksum,
                            char* errmsg);

/** A descriptor that becomes readable when the verdict may be in. */
int kv_snapshot_verifier_fd(const struct kv_snapshot_verifier* v);

/** Stops (kills) a check still running, reaps it, frees v. Accepts NULL. */
void kv_snapshot_verify_close(struct kv_snapshot_verifier* v);

struct kv_snapshot_reader; /* opaque */

/**
 * Opens the snapshot file `path` for streaming and fills *info (may be
 * NULL). Returns STORE_OK and sets *out (caller owns it, close with
 * kv_snapshot_reader_close), or a STORE_E* code with a message.
 */
int kv_snapshot_reader_open(const char* path,
                            struct kv_snapshot_reader** out,
                            struct kv_snapshot_info* info,
                            char* errmsg);

/** Size of the snapshot file in bytes. */
uint64_t kv_snapshot_reader_size(const struct kv_snapshot_reader* r);

/**
 * Copies up to `cap` bytes (at most KV_SNAPSHOT_CHUNK_MAX) from `offset`
 * into buf. Sets *n (0 at the end) and *done (offset + *n == size).
 * Returns STORE_OK, STORE_EINVAL (offset beyond the end) or STORE_EIO.
 */
int kv_snapshot_reader_read(struct kv_snapshot_reader* r,
                            uint64_t offset,
                            uint8_t* buf,
                            size_t cap,
                            size_t* n,
                            bool* done);

/** Closes the reader. Accepts NULL. */
void kv_snapshot_reader_close(struct kv_snapshot_reader* r);

struct kv_snapshot_writer; /* opaque */

/**
 * Starts receiving a snapshot of `total_size` bytes (0 = not known in
 * advance, e.g. a chunked HTTP upload) for kv (any earlier incoming data is
 * discarded). Returns STORE_OK and sets *out (finish or
 * abort it), or a STORE_E* code with a message.
 */
int kv_snapshot_writer_open(struct kv_state* kv,
                            uint64_t total_size,
                            struct kv_snapshot_writer** out,
                            char* errmsg);

/**
 * Writes the chunk [offset, offset + len). A chunk may repeat bytes already
 * received; one that starts beyond them is refused with STORE_EINVAL.
 * *next_offset (may be NULL) is set to the bytes received so far, where the
 * sender resumes. Returns STORE_OK, STORE_EINVAL, STORE_EDISKFULL or
 * STORE_EIO.
 */
int kv_snapshot_writer_write(struct kv_snapshot_writer* w,
                             uint64_t offset,
                             const uint8_t* data,
                             size_t len,
                             uint64_t* next_offset);

/** Bytes received in order so far. */
uint64_t kv_snapshot_writer_received(const struct kv_snapshot_writer* w);

/**
 * Completes the installation (see the header comment) and fills *info
 * (may be NULL) with what kv now holds. Frees w in every case. Returns
 * STORE_OK; STORE_EINVAL (fewer bytes than total_size, or none), STORE_ECORRUPT
 * (the copy fails verification) or STORE_EIO before the swap, with kv
 * untouched; after the swap only a failure to reopen can happen (STORE_E* from
 * kv_open): kv is then closed and must be freed with kv_close and reopened.
 */
int kv_snapshot_writer_finish(struct kv_snapshot_writer* w,
                              struct kv_snapshot_info* info,
                              char* errmsg);

/** Discards the incoming data and frees w. Accepts NULL. */
void kv_snapshot_writer_abort(struct kv_snapshot_writer* w);

/**
 * Installs the snapshot file `path` into kv (a restore): streams it
 * through a writer in KV_SNAPSHOT_CHUNK_MAX chunks and finishes. Returns
 * what kv_snapshot_writer_finish returns.
 */
int kv_snapshot_install_file(struct kv_state* kv,
                             const char* path,
                             struct kv_snapshot_info* info,
                             char* errmsg);

#endif /* SKEIN_KV_SNAPSHOT_H */

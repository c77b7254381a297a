/*
 * codec.h - translation between the core's struct raft_message and the
 * protobuf Envelope on the wire.
 *
 * Node ids: the wire and every user-facing surface use the node id the
 * operator configured (0, 1, 2 in the seed form); the core needs non-zero
 * ids, so core id = node id + 1. This file is the only place that adds or
 * subtracts that 1.
 */
#ifndef SKEIN_CODEC_H
#define SKEIN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "skein.pb-c.h"

/** Core id of a configured node id. */
raft_node_id codec_core_id(uint64_t node_id);
/** Configured node id of a core id (core id must be non-zero). */
uint64_t codec_node_id(raft_node_id core_id);

/**
 * Packs a core message (any type but RAFT_MSG_SNAPSHOT, which the node
 * streams as InstallSnapshotChunk) into a new Envelope. Returns 0 and sets
 * *out and *len (caller frees *out with free()), or -1 on allocation failure or
 * an unsupported type.
 */
int codec_pack_raft(const struct raft_message* m,
                    uint64_t cluster_id,
                    uint8_t** out,
                    size_t* len);

/** Packs any Envelope; same ownership as codec_pack_raft. */
int codec_pack_envelope(const Skein__Envelope* env, uint8_t** out, size_t* len);

/**
 * A decoded raft message: `msg` points into `entries`, which this struct
 * owns together with the unpacked envelope. Free with codec_raft_free.
 */
struct codec_raft {
    struct raft_message msg;
    struct raft_entry* entries;
    Skein__Envelope* env; /* keeps entry data alive */
};

/**
 * Converts an unpacked Envelope whose body is a raft RPC into a core
 * message. Takes ownership of `env` on success (freed by codec_raft_free);
 * on failure the caller keeps it. Validates presence of the fields each
 * type needs and their bounds. Returns 0, or -1 with a static reason in
 * *why when the envelope is not a well-formed raft message.
 */
int codec_to_raft(Skein__Envelope* env,
                  struct codec_raft* out,
                  const char** why);

/** Frees what codec_to_raft produced. Accepts a zeroed struct. */
void codec_raft_free(struct codec_raft* c);

/** True if the envelope body is a raft RPC that codec_to_raft converts. */
int codec_is_raft_body(const Skein__Envelope* env);

/**
 * True if the envelope travels between members like a raft RPC (one-way,
 * alone, inside an EnvelopeBatch or in a raft RPC's reply): a raft RPC, a
 * one-way ForwardBatch or ForwardResults.
 */
int codec_is_stream_body(const Skein__Envelope* env);

/**
 * Fills a Configuration message from a core conf. Members and their array
 * are allocated with malloc; free with codec_free_configuration.
 */
int codec_configuration_from_conf(const struct raft_conf* conf,
                                  Skein__Configuration* out);
/** Frees what codec_configuration_from_conf allocated (not `c` itself). */
void codec_free_configuration(Skein__Configuration* c);
/**
 * Converts a Configuration into a core conf. Returns 0, or -1 if it is
 * empty, too large or has duplicate ids.
 */
int codec_conf_from_configuration(const Skein__Configuration* c,
                                  struct raft_conf* out);

#endif

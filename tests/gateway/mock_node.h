/*
 * mock_node.h - a fake Skein node for the gateway tests: an nng REP server
 * (inproc:// or tcp://) that answers ClientRequest and AdminRequest
 * envelopes from an in-memory map, and raft AppendEntries with a canned
 * AppendEntriesResponse. Knobs make it a follower that redirects, a slow
 * or silent node, or one that answers a forced status.
 *
 * Threads: a few worker threads, each with its own nng context. Every
 * function may be called from the test thread while the workers run.
 */
#ifndef SKEIN_TEST_MOCK_NODE_H
#define SKEIN_TEST_MOCK_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mock_node;

/* The snapshot a mock serves for GET /_raft/snapshot. */
#define MOCK_SNAPSHOT_BYTES ((size_t)(2u << 20) + 12345u)
#define MOCK_SNAPSHOT_INDEX 77u
#define MOCK_SNAPSHOT_TERM  3u

/* Starts a mock node with this id listening on url (a leader by default).
 * Returns NULL on failure. Stop it with mock_stop. */
struct mock_node* mock_start(const char* url, uint64_t id);
/* Stops the workers, closes the socket and frees everything. */
void mock_stop(struct mock_node* m);

/* Makes the mock a follower whose writes answer NOT_LEADER with these
 * hints (leader_id 0 and url NULL: no hint), or a leader again. */
void mock_set_leader(struct mock_node* m,
                     bool leader,
                     uint64_t leader_id,
                     const char* leader_url);
/* Delays every reply by ms. */
void mock_set_delay(struct mock_node* m, unsigned ms);
/* A silent mock receives requests and never answers. */
void mock_set_silent(struct mock_node* m, bool silent);
/* The next `count` client requests are answered with `status` (a
 * Skein__ClientResponse__Status) instead of being served. */
void mock_force_status(struct mock_node* m, int status, unsigned count);
/* The cluster id the mock puts in replies (0 = none). */
void mock_set_cluster_id(struct mock_node* m, uint64_t cluster_id);

/* What the mock saw. The strings are copied into buf (NUL-terminated). */
unsigned mock_client_requests(struct mock_node* m);
unsigned mock_admin_requests(struct mock_node* m);
void mock_last_request_id(struct mock_node* m, char* buf, size_t buflen);
int mock_last_consistency(struct mock_node* m);
uint64_t mock_last_force_resync(struct mock_node* m);
uint64_t mock_last_transfer(struct mock_node* m);
uint64_t mock_last_append_from(struct mock_node* m);
unsigned mock_entry_count(struct mock_node* m);
/* Bytes of the last restored snapshot upload equal the served snapshot
 * (1), differ (0), or no upload finished (-1). */
int mock_restore_matches(struct mock_node* m);
/* The byte the mock's snapshot has at offset i (for checking downloads). */
uint8_t mock_snapshot_byte(size_t i);

#endif /* SKEIN_TEST_MOCK_NODE_H */

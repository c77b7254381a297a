/*
 * node_snapshot.c - snapshots over the wire and log compaction.
 *
 * Sending: when the core asks for a snapshot to a follower, the node makes
 * a compacted copy of its state (or reuses a recent one at least as new),
 * and streams it in chunks on the bulk channel, one chunk in flight, each
 * acknowledged with the receiver's next offset. The copy may be newer than
 * the snapshot index the core announced: the state machine skips entries
 * at or below its applied index, so replaying the gap is harmless.
 *
 * Receiving: chunks go into a kv_snapshot_writer; after the last one the
 * snapshot is offered to the core, and only if the core takes it (the
 * ready batch carries it) is it installed: state swapped, log reset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "node_internal.h"
#include "store_recover.h"

#define SNAP_COOKIE (1ULL << 63)

static void step_snapshot_done(struct node* n, uint64_t peer, bool ok) {
    struct raft_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = RAFT_EVENT_SNAPSHOT_DONE;
    ev.peer = codec_core_id(peer);
    ev.ok = ok;
    (void)raft_step(n->raft, &ev);
}

static void end_send(struct node* n, struct node_peer* p, bool ok) {
    kv_snapshot_reader_close(p->snap_reader);
    p->snap_reader = NULL;
    p->snap_active = false;
    if (ok) {
        n->counters.snapshot_send_successes++;
    } else {
        n->counters.snapshot_send_failures++;
    }
    step_snapshot_done(n, p->id, ok);
}

/* Fills a Configuration with member addresses (freed by the caller with
 * codec_free_configuration). */
void node_fill_configuration(struct node* n,
                             const struct raft_conf* conf,
                             Skein__Configuration* out) {
    if (codec_configuration_from_conf(conf, out) != 0) {
        return;
    }
    for (size_t i = 0; i < out->n_members; i++) {
        Skein__Member* m = out->members[i];
        struct node_peer* p = node_peer_of(n, m->id);
        if (m->id == n->cfg.id) {
            m->address = n->cfg.listen_url;
            m->http_address = n->cfg.http_addr;
        } else if (p != NULL) {
            m->address = p->url;
            m->http_address = p->http;
        }
    }
}

static void send_chunk(struct node* n, struct node_peer* p) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__InstallSnapshotChunk c = SKEIN__INSTALL_SNAPSHOT_CHUNK__INIT;
    Skein__Configuration conf;
    uint8_t* buf = malloc(NODE_SNAPSHOT_CHUNK);
    size_t got = 0;
    bool done = false;

    if (buf == NULL ||
        kv_snapshot_reader_read(p->snap_reader, p->snap_offset, buf,
                                NODE_SNAPSHOT_CHUNK, &got, &done) != STORE_OK) {
        free(buf);
        end_send(n, p, false);
        return;
    }
    node_fill_configuration(n, &p->snap_meta.conf, &conf);
    c.has_term = 1;
    c.term = raft_current_term(n->raft);
    c.has_last_included_index = 1;
    c.last_included_index = p->snap_meta.index;
    c.has_last_included_term = 1;
    c.last_included_term = p->snap_meta.term;
    c.configuration = &conf;
    c.has_offset = 1;
    c.offset = p->snap_offset;
    c.has_data = 1;
    c.data.data = buf;
    c.data.len = got;
    c.has_done = 1;
    c.done = done;
    c.has_total_size = 1;
    c.total_size = kv_snapshot_reader_size(p->snap_reader);
    env.has_cluster_id = 1;
    env.cluster_id = n->cfg.cluster_id;
    env.has_from = 1;
    env.from = n->cfg.id;
    env.has_to = 1;
    env.to = p->id;
    env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT;
    env.install_snapshot = &c;
    node_send_envelope(n, p->id, TRANSPORT_BULK, &env, SNAP_COOKIE | p->id,
                       true);
    codec_free_configuration(&conf);
    free(buf);
}

/* Opens the cached snapshot for p and sends its first chunk. */
static void begin_stream(struct node* n, struct node_peer* p) {
    char err[STORE_ERRMSG_SIZE] = "";

    if (kv_snapshot_reader_open(n->snap_cache_path, &p->snap_reader, NULL,
                                err) != STORE_OK) {
        fprintf(stderr, "skein-node: snapshot for node %llu: %s\n",
                (unsigned long long)p->id, err);
        p->snap_active = false;
        n->counters.snapshot_send_failures++;
        step_snapshot_done(n, p->id, false);
        return;
    }
    p->snap_active = true;
    p->snap_offset = 0;
    p->snap_started_ms = node_now_ms();
    send_chunk(n, p);
}

static bool cache_covers(const struct node* n, raft_index index) {
    return n->snap_cache_valid &&
           n->snap_cache_info.stats.applied_index >= index;
}

void node_snapshot_start_send(struct node* n, const struct raft_message* m) {
    struct node_peer* p = node_peer_of(n, codec_node_id(m->to));

    if (p == NULL || p->snap_active) {
        return; /* one transfer per follower at a time */
    }
    n->counters.snapshot_send_attempts++;
    p->snap_meta = m->snapshot;
    if (cache_covers(n, m->snapshot.index)) {
        begin_stream(n, p);
        return;
    }
    /* The copy is made off the loop (node_snapshot_poll_builds starts the
     * stream when it is there); the follower waits, the cluster does not. */
    p->snap_active = true;
    p->snap_waiting = true;
    p->snap_started_ms = node_now_ms();
    if (!n->snap_send_build.running) {
        snprintf(n->snap_cache_path, sizeof(n->snap_cache_path), "%s/send.mdb",
                 n->snap_dir);
        n->snap_cache_valid = false; /* being replaced */
        if (node_snapshot_build_start(n, &n->snap_send_build,
                                      n->snap_cache_path) != 0) {
            p->snap_active = false;
            p->snap_waiting = false;
            n->counters.snapshot_send_failures++;
            step_snapshot_done(n, p->id, false);
        }
    }
}

static void* snapshot_builder(void* arg) {
    struct node_snap_build* b = arg;

    b->err[0] = '\0';
    b->rv = kv_snapshot_create(b->kv, b->path, &b->info, b->err);
    atomic_store(&b->done, true);
    return NULL;
}

int node_snapshot_build_start(struct node* n,
                              struct node_snap_build* b,
                              const char* path) {
    if (b->running) {
        return -1;
    }
    /* The builder reads committed state: a backup or a snapshot holds
     * every write answered before it started. */
    node_state_commit(n, true);
    b->kv = n->kv;
    snprintf(b->path, sizeof(b->path), "%s", path);
    atomic_store(&b->done, false);
    if (pthread_create(&b->thread, NULL, snapshot_builder, b) != 0) {
        return -1;
    }
    b->running = true;
    return 0;
}

bool node_snapshot_build_finished(struct node_snap_build* b) {
    if (!b->running || !atomic_load(&b->done)) {
        return false;
    }
    pthread_join(b->thread, NULL);
    b->running = false;
    return true;
}

/* The send snapshot is made: stream it to every follower waiting for it,
 * or (if allowed) make a newer one for those that need more. */
static void send_build_done(struct node* n, bool may_restart) {
    struct node_snap_build* b = &n->snap_send_build;
    bool again = false;

    if (b->rv == STORE_OK) {
        n->snap_cache_info = b->info;
        n->snap_cache_valid = true;
        n->counters.snapshots_created++;
    } else {
        fprintf(stderr, "skein-node: making a snapshot to send: %s\n", b->err);
    }
    for (uint32_t i = 0; i < n->n_peers; i++) {
        struct node_peer* p = &n->peers[i];
        if (!p->snap_waiting) {
            continue;
        }
        if (b->rv != STORE_OK) {
            p->snap_waiting = false;
            p->snap_active = false;
            n->counters.snapshot_send_failures++;
            step_snapshot_done(n, p->id, false);
        } else if (cache_covers(n, p->snap_meta.index)) {
            p->snap_waiting = false;
            begin_stream(n, p);
        } else {
            again = true; /* asked for after the copy began */
        }
    }
    if (again) {
        n->snap_cache_valid = false;
        if (!may_restart ||
            node_snapshot_build_start(n, b, n->snap_cache_path) != 0) {
            for (uint32_t i = 0; i < n->n_peers; i++) {
                struct node_peer* p = &n->peers[i];
                if (p->snap_waiting) {
                    p->snap_waiting = false;
                    p->snap_active = false;
                    n->counters.snapshot_send_failures++;
                    step_snapshot_done(n, p->id, false);
                }
            }
        }
    }
}

void node_snapshot_poll_builds(struct node* n) {
    if (node_snapshot_build_finished(&n->snap_send_build)) {
        send_build_done(n, true);
    }
    if (node_snapshot_build_finished(&n->backup_build)) {
        node_admin_backup_built(n);
    }
}

void node_snapshot_wait_builds(struct node* n) {
    if (n->snap_send_build.running) {
        pthread_join(n->snap_send_build.thread, NULL);
        n->snap_send_build.running = false;
        send_build_done(n, false); /* starts no new copy */
    }
    if (n->backup_build.running) {
        pthread_join(n->backup_build.thread, NULL);
        n->backup_build.running = false;
        node_admin_backup_built(n);
    }
}

void node_snapshot_on_reply(struct node* n, struct transport_event* ev) {
    struct node_peer* p = node_peer_of(n, ev->cookie & ~SNAP_COOKIE);
    const Skein__InstallSnapshotResponse* r;

    if (p == NULL || !p->snap_active) {
        return;
    }
    if (ev->type != TRANSPORT_EV_REPLY || ev->env == NULL ||
        ev->env->body_case != SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT_RESPONSE) {
        end_send(n, p, false);
        return;
    }
    r = ev->env->install_snapshot_response;
    if (!r->success) {
        end_send(n, p, false);
        return;
    }
    if (r->done) {
        end_send(n, p, true);
        return;
    }
    p->snap_offset = r->next_offset;
    send_chunk(n, p);
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */

static void chunk_reply(struct node* n,
                        struct transport_server_ctx* reply,
                        uint64_t index,
                        uint64_t next,
                        bool success,
                        bool done) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__InstallSnapshotResponse r = SKEIN__INSTALL_SNAPSHOT_RESPONSE__INIT;

    r.has_term = 1;
    r.term = raft_current_term(n->raft);
    r.has_last_included_index = 1;
    r.last_included_index = index;
    r.has_next_offset = 1;
    r.next_offset = next;
    r.has_success = 1;
    r.success = success;
    r.has_done = 1;
    r.done = done;
    env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT_RESPONSE;
    env.install_snapshot_response = &r;
    transport_reply(reply, &env);
}

static void abort_incoming(struct node* n) {
    if (n->snap_writer != NULL) {
        kv_snapshot_writer_abort(n->snap_writer);
        n->snap_writer = NULL;
    }
    if (n->snap_last_env != NULL) {
        skein__envelope__free_unpacked(n->snap_last_env, NULL);
        n->snap_last_env = NULL;
    }
}

/* Offers a fully received snapshot to the core. */
static void offer_snapshot(struct node* n,
                           const Skein__Envelope* env,
                           const Skein__InstallSnapshotChunk* c) {
    struct raft_message m;
    struct raft_event ev;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_SNAPSHOT;
    m.from = codec_core_id(env->from);
    m.to = raft_id(n->raft);
    m.term = c->term;
    m.snapshot.index = c->last_included_index;
    m.snapshot.term = c->last_included_term;
    if (codec_conf_from_configuration(c->configuration, &m.snapshot.conf) !=
        0) {
        return;
    }
    for (size_t i = 0; i < c->configuration->n_members; i++) {
        const Skein__Member* mem = c->configuration->members[i];
        if (mem->address != NULL) {
            node_add_peer(n, mem->id, mem->address, mem->http_address);
        }
    }
    memset(&ev, 0, sizeof(ev));
    ev.type = RAFT_EVENT_RECEIVE;
    ev.message = &m;
    (void)raft_step(n->raft, &ev);
}

void node_snapshot_on_chunk(struct node* n, struct transport_event* ev) {
    const Skein__Envelope* env = ev->env;
    const Skein__InstallSnapshotChunk* c = env->install_snapshot;
    char err[STORE_ERRMSG_SIZE] = "";
    uint64_t next = 0;
    struct transport_server_ctx* reply = ev->reply;

    ev->reply = NULL;
    if (reply == NULL) {
        return;
    }
    if (!env->has_from || !c->has_term || !c->has_last_included_index ||
        !c->has_last_included_term || !c->has_offset || !c->has_total_size ||
        c->configuration == NULL || c->last_included_index == 0 ||
        c->term < raft_current_term(n->raft)) {
        chunk_reply(n, reply, c->last_included_index, 0, false, false);
        return;
    }
    if (c->offset == 0) {
        abort_incoming(n);
        if (kv_snapshot_writer_open(n->kv, c->total_size, &n->snap_writer,
                                    err) != STORE_OK) {
            chunk_reply(n, reply, c->last_included_index, 0, false, false);
            return;
        }
        n->snap_from = env->from;
        n->snap_index = c->last_included_index;
    }
    if (n->snap_writer == NULL || n->snap_from != env->from ||
        n->snap_index != c->last_included_index ||
        kv_snapshot_writer_write(n->snap_writer, c->offset, c->data.data,
                                 c->data.len, &next) != STORE_OK) {
        chunk_reply(n, reply, c->last_included_index, 0, false, false);
        return;
    }
    if (!c->done) {
        chunk_reply(n, reply, c->last_included_index, next, true, false);
        return;
    }
    n->counters.snapshots_received++;
    if (c->last_included_index <= raft_commit_index(n->raft)) {
        /* Already past it: nothing to install. */
        abort_incoming(n);
        chunk_reply(n, reply, c->last_included_index, next, true, true);
        return;
    }
    n->snap_reply = reply;
    n->snap_finished = false;
    offer_snapshot(n, env, c);
}

int node_snapshot_install(struct node* n,
                          const struct raft_snapshot_meta* meta) {
    char err[STORE_ERRMSG_SIZE] = "";
    int rv;

    /* The install swaps the state's files: no copy may read them then. */
    node_snapshot_wait_builds(n);

    if (n->snap_writer == NULL || n->snap_index != meta->index) {
        fprintf(stderr, "skein-node: the core took a snapshot we lack\n");
        return -1;
    }
    rv = kv_snapshot_writer_finish(n->snap_writer, &n->snap_info, err);
    n->snap_writer = NULL;
    if (rv != STORE_OK) {
        fprintf(stderr, "skein-node: installing snapshot %llu: %s\n",
                (unsigned long long)meta->index, err);
        return -1;
    }
    rv = n->store.ops->install_snapshot(n->store.ctx, meta);
    if (rv != RAFT_OK) {
        return -1;
    }
    n->snap_cache_valid = false;
    n->snap_finished = true;
    n->counters.snapshots_applied++;
    return 0;
}

void node_snapshot_after_ready(struct node* n) {
    if (n->snap_reply == NULL) {
        return;
    }
    /* The core declined (it already holds the entry) or we installed. */
    chunk_reply(n, n->snap_reply, n->snap_index, 0, true, true);
    n->snap_reply = NULL;
    if (!n->snap_finished) {
        abort_incoming(n);
    }
}

/* ------------------------------------------------------------------ */
/* Compaction                                                          */

void node_maybe_compact(struct node* n) {
    struct store_compaction plan;
    struct raft_snapshot_meta meta;
    raft_index applied = raft_applied_index(n->raft);

    uint64_t every = n->cfg.snapshot_threshold / 2;

    if (every == 0 || every > 1000) {
        every = every == 0 ? 1 : 1000;
    }
    if (applied < n->last_compaction_check + every) {
        return;
    }
    n->last_compaction_check = applied;
    if (kv_sync(n->kv) != STORE_OK) {
        return;
    }
    store_plan_compaction(store_lmdb_first_index(n->log),
                          kv_durable_applied(n->kv), n->cfg.log_retain,
                          n->cfg.snapshot_threshold, &plan);
    if (!plan.due) {
        return;
    }
    if (plan.snapshot_index > applied) {
        plan.snapshot_index = applied;
    }
    if (plan.snapshot_index <= raft_snapshot(n->raft)->index ||
        raft_snapshot_taken(n->raft, plan.snapshot_index, &meta) != RAFT_OK) {
        return;
    }
    (void)store_compact_below(n->log, n->kv, &meta, n->cfg.log_retain);
}

void node_snapshot_close_all(struct node* n) {
    for (uint32_t i = 0; i < n->n_peers; i++) {
        kv_snapshot_reader_close(n->peers[i].snap_reader);
        n->peers[i].snap_reader = NULL;
    }
    abort_incoming(n);
    kv_snapshot_reader_close(n->backup_reader);
    n->backup_reader = NULL;
}

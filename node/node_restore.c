/*
 * node_restore.c - POST /_raft/snapshot: restoring a backup into the
 * running cluster, in log order.
 *
 * Why through the log: installing the file on the leader alone (and
 * pushing it to followers as InstallSnapshot) would replace the state
 * outside the log's order, behind the back of writes already proposed,
 * and a follower that missed the push would keep the old data. Instead:
 *
 *  1. Staging (leader only). The gateway streams the file in chunks
 *     (SnapshotWriteRequest). upload_id 0 starts an upload: the leader
 *     writes it to <data>/restore/upload-<id>.mdb, in order (a chunk at
 *     the wrong offset is refused, a repeated one accepted). An abort, or
 *     30 s without a chunk (checked every tick), discards it. One upload
 *     at a time: a new one replaces the one staged.
 *  2. Verification, on `done`, before anything is proposed: the whole file
 *     is checked (kv_snapshot_verify_file: LMDB structure, format, every
 *     entry, key index, idempotency records, count and hash). It runs in
 *     a child process, polled every tick: a damaged file cannot crash the
 *     node, and the loop keeps serving (and heartbeating) meanwhile; new
 *     uploads wait (NO_QUORUM) until the restore is over. Garbage or a
 *     truncated upload is BAD_REQUEST and nothing changes anywhere.
 *  3. Replication: the file goes into the log as skein.Command.restore
 *     entries, at most 1 MiB of data each (KV_RESTORE_CHUNK_MAX, within
 *     the core's max_entry_bytes), NODE_RESTORE_WINDOW of them in flight
 *     at a time (so a large file never sits in memory or floods the
 *     log), then one commit entry with the file's XXH64. Every node
 *     applies them deterministically (kv_state.h): chunks are staged in
 *     the state itself, the commit entry replaces the data and keeps the
 *     membership and raft metadata.
 *  4. The answer comes when the commit entry is applied here: restored,
 *     with its index and term; BAD_REQUEST if the state machine refused
 *     it. Leadership lost: NOT_LEADER while the commit entry was not yet
 *     proposed (no one else can propose it: the restore cannot happen),
 *     UNKNOWN_OUTCOME once it was (it may still commit). At the write
 *     deadline the client gets UNKNOWN_OUTCOME and the restore goes on.
 *  5. Cleanup: chunks of a restore given up before its commit entry stay
 *     staged in every node's state. A leader that finds them with no
 *     restore running proposes an abort entry for that upload id (every
 *     NODE_RESTORE_ABORT_RETRY_MS until it applies); keyed by upload id,
 *     it leaves alone a commit entry ahead of it in the log, and any
 *     later upload.
 */
#include "node_restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_snapshot.h"
#include "node_internal.h"

#define ST(x) SKEIN__CLIENT_RESPONSE__STATUS__##x

_Static_assert(KV_RESTORE_CHUNK_MAX <= NODE_SNAPSHOT_CHUNK,
               "a restore chunk entry fits the core's max_entry_bytes");

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static void reply_progress(struct transport_server_ctx* reply,
                           uint64_t upload_id,
                           uint64_t next_offset,
                           bool restored,
                           raft_index index,
                           raft_term term) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__SnapshotWriteResponse w = SKEIN__SNAPSHOT_WRITE_RESPONSE__INIT;

    w.has_upload_id = 1;
    w.upload_id = upload_id;
    w.has_next_offset = 1;
    w.next_offset = next_offset;
    w.has_restored = 1;
    w.restored = restored;
    if (restored) {
        w.has_last_included_index = 1;
        w.last_included_index = index;
        w.has_last_included_term = 1;
        w.last_included_term = term;
    }
    resp.has_status = 1;
    resp.status = ST(OK);
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_WRITE;
    resp.snapshot_write = &w;
    node_reply_admin(reply, &resp);
}

/* ------------------------------------------------------------------ */
/* Staging                                                             */

static void restore_dir(const struct node* n, char* buf, size_t cap) {
    snprintf(buf, cap, "%s/restore", n->cfg.data_dir);
}

static void staging_discard(struct node* n) {
    struct node_restore* s = &n->restore;

    if (s->path[0] != '\0') {
        unlink(s->path);
    }
    s->upload_id = 0;
    s->received = 0;
    s->total_size = 0;
    s->path[0] = '\0';
}

/* Removes what earlier uploads (or a crash) left in the restore dir. */
static void staging_sweep(const char* dir) {
    DIR* d = opendir(dir);
    struct dirent* de;
    char path[NODE_URL_MAX + 64];

    if (d == NULL) {
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "upload-", 7) == 0 &&
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) <
                (int)sizeof(path)) {
            unlink(path);
        }
    }
    closedir(d);
}

/* Starts a new upload (replacing any staged one); a status. */
static int staging_start(struct node* n, uint64_t total, const char** why) {
    struct node_restore* s = &n->restore;
    char dir[NODE_URL_MAX + 16];

    staging_discard(n);
    restore_dir(n, dir, sizeof(dir));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        *why = "cannot create the restore directory";
        return ST(INTERNAL);
    }
    staging_sweep(dir);
    n->rng = n->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t id = (n->rng >> 1) | 1;
    if (snprintf(s->path, sizeof(s->path), "%s/upload-%016llx.mdb", dir,
                 (unsigned long long)id) >= (int)sizeof(s->path)) {
        s->path[0] = '\0';
        *why = "data directory path too long";
        return ST(INTERNAL);
    }
    int fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        s->path[0] = '\0';
        *why = "cannot create the upload file";
        return err == ENOSPC || err == EDQUOT ? ST(DISK_FULL) : ST(INTERNAL);
    }
    close(fd);
    s->upload_id = id;
    s->received = 0;
    s->total_size = total;
    return ST(OK);
}

/* Writes the part of a chunk not staged yet; a status. */
static int staging_write(struct node_restore* s,
                         uint64_t offset,
                         const uint8_t* data,
                         size_t len,
                         const char** why) {
    if (offset > s->received) {
        *why = "chunk beyond the bytes received (send the upload in order)";
        return ST(BAD_REQUEST);
    }
    if (s->total_size > 0 && len > s->total_size - offset) {
        *why = "chunk beyond the announced total size";
        return ST(BAD_REQUEST);
    }
    if (offset + len <= s->received) {
        return ST(OK); /* a repeat */
    }
    size_t skip = (size_t)(s->received - offset);
    int fd = open(s->path, O_WRONLY | O_CLOEXEC);
    int status = fd < 0 ? ST(INTERNAL) : ST(OK);
    while (status == ST(OK) && skip < len) {
        ssize_t put = pwrite(fd, data + skip, len - skip, (off_t)s->received);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            status = errno == ENOSPC || errno == EDQUOT ? ST(DISK_FULL)
                                                        : ST(INTERNAL);
            break;
        }
        skip += (size_t)put;
        s->received += (uint64_t)put;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (status != ST(OK)) {
        *why = status == ST(DISK_FULL) ? "disk full while staging the upload"
                                       : "cannot write the upload file";
    }
    return status;
}

/* ------------------------------------------------------------------ */
/* Replication                                                         */

/* Ends the run (answering its request if one waits) and the upload. */
static void restore_finish(struct node* n, int status, const char* why) {
    struct node_restore* s = &n->restore;

    if (s->reply != NULL) {
        node_reply_admin_status(n, s->reply, status, why);
        s->reply = NULL;
    }
    if (status != ST(OK)) {
        fprintf(stderr, "skein-node %llu: restore of upload %016llx: %s\n",
                (unsigned long long)n->cfg.id, (unsigned long long)s->upload_id,
                why);
    }
    kv_snapshot_verify_close(s->verifier);
    s->verifier = NULL;
    s->running = false;
    s->commit_proposed = false;
    s->n_inflight = 0;
    staging_discard(n);
}

/* Packs the next restore entry into *out (malloc'd) and moves past it;
 * sets *commit for the commit entry. False if the file cannot be read. */
static bool pack_next(struct node* n,
                      int fd,
                      uint8_t** out,
                      uint32_t* len,
                      bool* commit) {
    struct node_restore* s = &n->restore;
    Skein__RestoreOp op = SKEIN__RESTORE_OP__INIT;
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    uint8_t* chunk = NULL;
    size_t n_chunk = 0;

    op.has_upload_id = 1;
    op.upload_id = s->upload_id;
    op.has_total_size = 1;
    op.total_size = s->received;
    *commit = s->proposed >= s->received;
    if (!*commit) {
        n_chunk = s->received - s->proposed < KV_RESTORE_CHUNK_MAX
                      ? (size_t)(s->received - s->proposed)
                      : KV_RESTORE_CHUNK_MAX;
        chunk = malloc(n_chunk);
        if (chunk == NULL ||
            pread(fd, chunk, n_chunk, (off_t)s->proposed) != (ssize_t)n_chunk) {
            free(chunk);
            return false;
        }
        op.has_offset = 1;
        op.offset = s->proposed;
        op.has_data = 1;
        op.data.data = chunk;
        op.data.len = n_chunk;
    } else {
        op.has_commit = 1;
        op.commit = 1;
        op.has_checksum = 1;
        op.checksum = s->checksum;
    }
    cmd.op_case = SKEIN__COMMAND__OP_RESTORE;
    cmd.restore = &op;
    *len = (uint32_t)skein__command__get_packed_size(&cmd);
    *out = malloc(*len);
    if (*out != NULL) {
        skein__command__pack(&cmd, *out);
        s->proposed += n_chunk;
    }
    free(chunk);
    return *out != NULL;
}

/* Proposes the next entries while the window has room. */
static void restore_pump(struct node* n) {
    struct node_restore* s = &n->restore;
    uint8_t* datas[NODE_RESTORE_WINDOW];
    uint32_t lens[NODE_RESTORE_WINDOW];
    size_t k = 0;
    bool commit = false;
    raft_index applied = kv_applied_index(n->kv);

    if (raft_role(n->raft) != RAFT_LEADER ||
        raft_current_term(n->raft) != s->term) {
        restore_finish(
            n, s->commit_proposed ? ST(UNKNOWN_OUTCOME) : ST(NOT_LEADER),
            s->commit_proposed ? "leadership changed after the restore was "
                                 "proposed: it may or may not be applied"
                               : "leadership changed before the restore was "
                                 "proposed: nothing was restored");
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < s->n_inflight; i++) {
        if (s->inflight[i] > applied) {
            s->inflight[kept++] = s->inflight[i];
        }
    }
    s->n_inflight = kept;
    if (s->commit_proposed || s->n_inflight == NODE_RESTORE_WINDOW) {
        return;
    }
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    uint64_t proposed = s->proposed;
    bool ok = fd >= 0;
    while (ok && !commit && s->n_inflight + k < NODE_RESTORE_WINDOW) {
        ok = pack_next(n, fd, &datas[k], &lens[k], &commit);
        k += ok ? 1 : 0;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (!ok) {
        for (size_t i = 0; i < k; i++) {
            free(datas[i]);
        }
        s->proposed = proposed;
        restore_finish(n, ST(INTERNAL), "cannot read the staged upload");
        return;
    }
    raft_index first = 0;
    raft_term term = 0;
    int rv = raft_propose(n->raft, RAFT_ENTRY_NORMAL,
                          (const uint8_t* const*)datas, lens, k, &first, &term);
    for (size_t i = 0; i < k; i++) {
        free(datas[i]);
    }
    if (rv == RAFT_EBUSY) {
        s->proposed = proposed; /* the log is full: again next tick */
        return;
    }
    if (rv != RAFT_OK) {
        s->proposed = proposed;
        restore_finish(n,
                       rv == RAFT_ENOTLEADER || rv == RAFT_ETRANSFER
                           ? ST(NOT_LEADER)
                           : ST(INTERNAL),
                       raft_strerror(rv));
        return;
    }
    for (size_t i = 0; i < k; i++) {
        s->inflight[s->n_inflight++] = first + i;
    }
    if (commit) {
        s->commit_proposed = true;
        s->commit_index = first + k - 1;
    }
}

/* `done`: checks the upload is complete and starts verifying it. */
static void restore_start(struct node* n, struct transport_server_ctx* reply) {
    struct node_restore* s = &n->restore;
    char err[STORE_ERRMSG_SIZE] = "";
    char why[STORE_ERRMSG_SIZE + 64];

    if (s->received == 0 ||
        (s->total_size > 0 && s->received != s->total_size)) {
        snprintf(
            why, sizeof(why), "incomplete upload: %llu of %llu bytes received",
            (unsigned long long)s->received, (unsigned long long)s->total_size);
        staging_discard(n);
        node_reply_admin_status(n, reply, ST(BAD_REQUEST), why);
        return;
    }
    if (n->disk_full || n->apply_behind) {
        node_reply_admin_status(n, reply, ST(DISK_FULL),
                                "the leader's disk is full");
        return;
    }
    /* In a child process, polled by the tick: the loop keeps serving (a
     * large file takes longer to read than an election timeout). */
    if (kv_snapshot_verify_begin(s->path, &s->verifier, err) != STORE_OK) {
        snprintf(why, sizeof(why), "cannot verify the upload: %s", err);
        staging_discard(n);
        node_reply_admin_status(n, reply, ST(INTERNAL), why);
        return;
    }
    s->term = raft_current_term(n->raft);
    s->reply = reply;
    s->deadline_ms = node_now_ms() + n->cfg.write_timeout_ms;
}

/* Collects the verdict; a good file starts replicating. */
static void restore_verified(struct node* n) {
    struct node_restore* s = &n->restore;
    struct kv_snapshot_info info;
    char err[STORE_ERRMSG_SIZE] = "";
    char why[STORE_ERRMSG_SIZE + 64];
    bool done = false;

    if (raft_role(n->raft) != RAFT_LEADER ||
        raft_current_term(n->raft) != s->term) {
        restore_finish(n, ST(NOT_LEADER),
                       "leadership changed before the restore was proposed: "
                       "nothing was restored");
        return;
    }
    int rv =
        kv_snapshot_verify_poll(s->verifier, &done, &info, &s->checksum, err);
    if (!done) {
        return;
    }
    kv_snapshot_verify_close(s->verifier);
    s->verifier = NULL;
    if (rv != STORE_OK) {
        /* The client needs the reason, not the leader's file name. */
        size_t pl = strlen(s->path);
        const char* e = strncmp(err, s->path, pl) == 0 && err[pl] == ':'
                            ? err + pl + 2
                            : err;
        snprintf(why, sizeof(why), "not a valid snapshot: %s", e);
        restore_finish(n, rv == STORE_ECORRUPT ? ST(BAD_REQUEST) : ST(INTERNAL),
                       why);
        return;
    }
    fprintf(stderr,
            "skein-node %llu: restoring upload %016llx: %llu bytes, a backup "
            "of %llu entries at index %llu\n",
            (unsigned long long)n->cfg.id, (unsigned long long)s->upload_id,
            (unsigned long long)s->received,
            (unsigned long long)info.stats.count,
            (unsigned long long)info.stats.applied_index);
    s->running = true;
    s->proposed = 0;
    s->commit_proposed = false;
    s->commit_index = 0;
    s->n_inflight = 0;
    restore_pump(n);
}

/* ------------------------------------------------------------------ */
/* Entry points                                                        */

void node_restore_handle(struct node* n,
                         struct transport_server_ctx* reply,
                         const Skein__SnapshotWriteRequest* req) {
    struct node_restore* s = &n->restore;
    const char* why = NULL;
    int status;

    if (raft_role(n->raft) != RAFT_LEADER) {
        node_reply_admin_status(n, reply, ST(NOT_LEADER),
                                "not the leader: a restore goes to the leader");
        return;
    }
    if (req->abort) {
        if (!s->running && s->verifier == NULL && s->upload_id != 0 &&
            req->upload_id == s->upload_id) {
            staging_discard(n);
        }
        reply_progress(reply, req->upload_id, 0, false, 0, 0);
        return;
    }
    if (s->running || s->verifier != NULL) {
        node_reply_admin_status(n, reply, ST(NO_QUORUM),
                                "a restore is being replicated: retry when "
                                "it is done");
        return;
    }
    if (req->upload_id == 0) {
        status = req->offset != 0 ? (why = "a new upload starts at offset 0",
                                     ST(BAD_REQUEST))
                                  : staging_start(n, req->total_size, &why);
    } else if (req->upload_id != s->upload_id) {
        status = ST(BAD_REQUEST);
        why =
            "unknown or expired upload id (an upload idle for 30 s is "
            "discarded)";
    } else {
        status = ST(OK);
    }
    if (status == ST(OK)) {
        status =
            staging_write(s, req->offset, req->data.data, req->data.len, &why);
    }
    if (status != ST(OK)) {
        node_reply_admin_status(n, reply, status, why);
        return;
    }
    s->used_ms = node_now_ms();
    if (!req->done) {
        reply_progress(reply, s->upload_id, s->received, false, 0, 0);
        return;
    }
    restore_start(n, reply);
}

/* Interval between abort proposals for the same staged upload. */
#define NODE_RESTORE_ABORT_RETRY_MS 5000

/* Proposes an abort entry for chunks staged in the state by a restore
 * that no longer runs anywhere: only the leader running it could have
 * proposed its commit entry, and it is not running here. Keyed by upload
 * id, so a commit entry already in the log ahead of it still applies. */
static void abort_stale_staging(struct node* n, uint64_t now) {
    struct node_restore* s = &n->restore;
    struct kv_restore_staging st;
    Skein__RestoreOp op = SKEIN__RESTORE_OP__INIT;
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    raft_index first = 0;
    raft_term term = 0;

    if (raft_role(n->raft) != RAFT_LEADER ||
        kv_restore_staging(n->kv, &st) != STORE_OK || st.upload_id == 0 ||
        (st.upload_id == s->abort_upload &&
         now - s->abort_ms < NODE_RESTORE_ABORT_RETRY_MS)) {
        return;
    }
    op.has_upload_id = 1;
    op.upload_id = st.upload_id;
    op.has_abort = 1;
    op.abort = 1;
    cmd.op_case = SKEIN__COMMAND__OP_RESTORE;
    cmd.restore = &op;
    uint32_t len = (uint32_t)skein__command__get_packed_size(&cmd);
    uint8_t* data = malloc(len);
    if (data == NULL) {
        return;
    }
    skein__command__pack(&cmd, data);
    if (raft_propose(n->raft, RAFT_ENTRY_NORMAL, (const uint8_t* const*)&data,
                     &len, 1, &first, &term) == RAFT_OK) {
        fprintf(stderr,
                "skein-node %llu: restore chunks of upload %016llx staged "
                "with no restore running: abort proposed at index %llu\n",
                (unsigned long long)n->cfg.id, (unsigned long long)st.upload_id,
                (unsigned long long)first);
        s->abort_upload = st.upload_id;
        s->abort_ms = now;
    }
    free(data);
}

void node_restore_tick(struct node* n) {
    struct node_restore* s = &n->restore;
    uint64_t now = node_now_ms();

    if (s->verifier != NULL) {
        restore_verified(n);
    }
    if (s->running || s->verifier != NULL) {
        if (s->verifier == NULL && s->commit_proposed &&
            kv_applied_index(n->kv) >= s->commit_index) {
            /* Applied without node_restore_applied seeing its result
             * (replayed while catching up after a full disk). */
            restore_finish(n, ST(UNKNOWN_OUTCOME),
                           "the restore was applied while the leader caught "
                           "up: its result is unknown");
            return;
        }
        if (s->running) {
            restore_pump(n);
        }
        if (s->reply != NULL && now >= s->deadline_ms) {
            node_reply_admin_status(n, s->reply, ST(UNKNOWN_OUTCOME),
                                    "the restore is still being verified or "
                                    "replicated: it completes in the "
                                    "background");
            s->reply = NULL;
        }
        return;
    }
    if (s->upload_id != 0 && now - s->used_ms >= NODE_RESTORE_IDLE_MS) {
        fprintf(stderr,
                "skein-node %llu: upload %016llx idle for %u s: discarded\n",
                (unsigned long long)n->cfg.id, (unsigned long long)s->upload_id,
                NODE_RESTORE_IDLE_MS / 1000);
        staging_discard(n);
    }
    abort_stale_staging(n, now);
}

void node_restore_applied(struct node* n,
                          const struct raft_entry* entries,
                          const struct kv_result* results,
                          size_t count) {
    struct node_restore* s = &n->restore;

    if (!s->running || !s->commit_proposed || count == 0 ||
        entries[0].index > s->commit_index ||
        entries[count - 1].index < s->commit_index) {
        return;
    }
    size_t i = (size_t)(s->commit_index - entries[0].index);
    if (entries[i].term != s->term) {
        restore_finish(n, ST(NOT_LEADER),
                       "the restore was superseded by a new leader's entry: "
                       "nothing was restored");
    } else if (results[i].status != KV_STATUS_OK) {
        restore_finish(n, ST(BAD_REQUEST),
                       results[i].error != NULL ? results[i].error
                                                : "the restore was refused");
    } else {
        fprintf(stderr,
                "skein-node %llu: restored upload %016llx (%llu bytes) at "
                "index %llu\n",
                (unsigned long long)n->cfg.id, (unsigned long long)s->upload_id,
                (unsigned long long)s->received,
                (unsigned long long)s->commit_index);
        if (s->reply != NULL) {
            reply_progress(s->reply, s->upload_id, s->received, true,
                           entries[i].index, entries[i].term);
            s->reply = NULL;
        }
        restore_finish(n, ST(OK), NULL);
    }
}

void node_restore_close(struct node* n) {
    if (n->restore.running || n->restore.verifier != NULL) {
        restore_finish(n, ST(UNKNOWN_OUTCOME), "the node is shutting down");
    }
    staging_discard(n);
}

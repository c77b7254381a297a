/*
 * kv_snapshot.c - snapshot create, stream and install (see kv_snapshot.h).
 */
#include "kv_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "kv_internal.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1) /* linux/fs.h */
#endif

struct kv_snapshot_reader {
    int fd;        /* the snapshot file */
    uint64_t size; /* its size */
};

struct kv_snapshot_writer {
    struct kv_state* kv; /* where it installs */
    char* incoming;      /* <state>.incoming */
    char* file;          /* <state>.incoming/data.mdb */
    int fd;              /* open on file */
    uint64_t total;      /* expected size */
    uint64_t received;   /* bytes received in order */
};

/* "<a><suffix>", malloc'd. */
static char* kv_suffix(const char* a, const char* suffix) {
    size_t la = strlen(a);
    size_t ls = strlen(suffix);
    char* p = malloc(la + ls + 1);

    if (p != NULL) {
        memcpy(p, a, la);
        memcpy(p + la, suffix, ls + 1);
    }
    return p;
}

/* The directory holding `path` ("." when none), malloc'd. */
static char* kv_parent(const char* path) {
    const char* slash = strrchr(path, '/');

    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    char* p = strdup(path);
    if (p != NULL) {
        p[slash - path] = '\0';
    }
    return p;
}

static bool kv_exists(const char* path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* fsyncs the directory holding `path`. */
static int kv_fsync_parent(const char* path) {
    char* parent = kv_parent(path);
    int rv = parent != NULL ? store_fsync_dir(parent) : STORE_ENOMEM;

    free(parent);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Crash recovery of a swap                                            */

int kv_snapshot_recover_dirs(const char* dir, char* errmsg) {
    char* incoming = kv_suffix(dir, ".incoming");
    char* old = kv_suffix(dir, ".old");
    char* ready = incoming != NULL ? store_path_join(incoming, "READY") : NULL;
    int rv = STORE_OK;

    if (incoming == NULL || old == NULL || ready == NULL) {
        rv = STORE_ENOMEM;
        goto out;
    }
    if (!kv_exists(dir)) {
        /* Crashed between the two renames of the fallback swap. */
        const char* from = kv_exists(ready) ? incoming
                           : kv_exists(old) ? old
                                            : NULL;
        if (from != NULL) {
            if (rename(from, dir) != 0) {
                store_errf(errmsg, "%s: cannot restore from %s: %s", dir, from,
                           strerror(errno));
                rv = STORE_EIO;
                goto out;
            }
            kv_fsync_parent(dir);
        }
    }
    if (store_rmtree(incoming) != STORE_OK || store_rmtree(old) != STORE_OK) {
        store_errf(errmsg, "%s: cannot remove leftovers of a snapshot install",
                   dir);
        rv = STORE_EIO;
        goto out;
    }
    free(ready);
    ready = store_path_join(dir, "READY");
    if (ready != NULL) {
        unlink(ready);
    }
    /* A restore commit's scratch copy (kv_state.c) left by a crash. */
    free(old);
    old = kv_suffix(dir, KV_RESTORE_FILE_SUFFIX);
    if (old != NULL) {
        unlink(old);
    }
out:
    free(incoming);
    free(old);
    free(ready);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Reading a snapshot file's metadata                                  */

static int kv_info_from_txn(MDB_txn* txn, struct kv_snapshot_info* info) {
    MDB_dbi meta;
    MDB_val k = {6, (void*)"format"};
    MDB_val v;

    if (mdb_dbi_open(txn, "meta", 0, &meta) != 0 ||
        mdb_get(txn, meta, &k, &v) != 0 || kv_format_check(&v) != STORE_OK) {
        return STORE_ECORRUPT;
    }
    k.mv_size = 5;
    k.mv_data = (void*)"state";
    if (mdb_get(txn, meta, &k, &v) != 0 ||
        kv_meta_decode(&v, &info->stats) != STORE_OK) {
        return STORE_ECORRUPT;
    }
    k.mv_size = 4;
    k.mv_data = (void*)"conf";
    info->conf_len = 0;
    if (mdb_get(txn, meta, &k, &v) == 0) {
        if (v.mv_size > sizeof(info->conf)) {
            return STORE_ECORRUPT;
        }
        memcpy(info->conf, v.mv_data, v.mv_size);
        info->conf_len = v.mv_size;
    }
    return STORE_OK;
}

/*
 * LMDB 0.9 file layout, read without mapping the file: two meta pages at
 * offsets 0 and psize, each a 16-byte page header then MDB_meta (magic,
 * version, address, mapsize, two 48-byte MDB_db records of which the first
 * one's md_pad holds the page size, last_pg, txnid). LMDB maps the file
 * and touches pages up to last_pg of the newer meta: on a file cut short,
 * a read would raise SIGBUS instead of returning an error, so every file
 * from outside (a restore upload) is checked here first.
 */
#define KV_MDB_MAGIC       0xBEEFC0DEu
#define KV_MDB_VERSION     1u
#define KV_MDB_PAGEHDR     16
#define KV_MDB_OFF_MAGIC   (KV_MDB_PAGEHDR + 0)
#define KV_MDB_OFF_VERSION (KV_MDB_PAGEHDR + 4)
#define KV_MDB_OFF_PSIZE   (KV_MDB_PAGEHDR + 24)
#define KV_MDB_OFF_LAST_PG (KV_MDB_PAGEHDR + 120)
#define KV_MDB_OFF_TXNID   (KV_MDB_PAGEHDR + 128)
#define KV_MDB_META_END    (KV_MDB_PAGEHDR + 136)

/* Reads one meta page at `off`; false if it is not one. */
static bool kv_mdb_meta(int fd,
                        uint64_t off,
                        uint32_t* psize,
                        uint64_t* last_pg,
                        uint64_t* txnid) {
    uint8_t m[KV_MDB_META_END];

    if (pread(fd, m, sizeof(m), (off_t)off) != (ssize_t)sizeof(m) ||
        store_get_le32(m + KV_MDB_OFF_MAGIC) != KV_MDB_MAGIC ||
        store_get_le32(m + KV_MDB_OFF_VERSION) != KV_MDB_VERSION) {
        return false;
    }
    *psize = store_get_le32(m + KV_MDB_OFF_PSIZE);
    *last_pg = store_get_le64(m + KV_MDB_OFF_LAST_PG);
    *txnid = store_get_le64(m + KV_MDB_OFF_TXNID);
    return true;
}

/* Checks that `path` is an LMDB file holding every page it refers to. */
static int kv_mdb_file_check(const char* path, uint64_t size, char* errmsg) {
    uint32_t ps0, ps1;
    uint64_t last0, last1, txn0, txn1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        store_errf(errmsg, "%s: %s", path, strerror(errno));
        return STORE_EIO;
    }
    bool ok0 = kv_mdb_meta(fd, 0, &ps0, &last0, &txn0);
    bool ok1 = ok0 && ps0 >= 512 && ps0 <= 65536 && (ps0 & (ps0 - 1)) == 0 &&
               kv_mdb_meta(fd, ps0, &ps1, &last1, &txn1) && ps1 == ps0;
    close(fd);
    if (!ok1) {
        store_errf(errmsg, "%s: not an LMDB snapshot file", path);
        return STORE_ECORRUPT;
    }
    uint64_t last = txn1 > txn0 ? last1 : last0;
    if (last < 1 || last >= UINT64_MAX / ps0 || (last + 1) * ps0 > size) {
        store_errf(
            errmsg, "%s: truncated: %llu bytes, its pages need %llu", path,
            (unsigned long long)size,
            (unsigned long long)(last < UINT64_MAX / ps0 ? (last + 1) * ps0
                                                         : UINT64_MAX));
        return STORE_ECORRUPT;
    }
    return STORE_OK;
}

int kv_snapshot_read_info(const char* path,
                          struct kv_snapshot_info* info,
                          char* errmsg) {
    MDB_env* env;
    MDB_txn* txn;
    struct stat st;

    memset(info, 0, sizeof(*info));
    if (stat(path, &st) != 0) {
        store_errf(errmsg, "%s: %s", path, strerror(errno));
        return STORE_EIO;
    }
    info->size = (uint64_t)st.st_size;
    int rv = kv_mdb_file_check(path, info->size, errmsg);
    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_env_create(&env);
    if (mrc != 0) {
        store_errf(errmsg, "mdb_env_create: %s", mdb_strerror(mrc));
        return store_err_from_mdb(mrc);
    }
    mdb_env_set_maxdbs(env, 8);
    mrc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0644);
    if (mrc == 0) {
        mrc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    }
    if (mrc != 0) {
        store_errf(errmsg, "%s: not a readable snapshot: %s", path,
                   mdb_strerror(mrc));
        mdb_env_close(env);
        return STORE_ECORRUPT;
    }
    rv = kv_info_from_txn(txn, info);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    if (rv != STORE_OK) {
        store_errf(errmsg, "%s: snapshot meta records missing or damaged",
                   path);
    }
    return rv;
}

/* ------------------------------------------------------------------ */
/* Read-only views of a snapshot file (verify, restore)                */

int kv_snapshot_open_ro(const char* path,
                        struct kv_state** out,
                        struct kv_snapshot_info* info,
                        char* errmsg) {
    MDB_txn* txn;
    int rv = kv_snapshot_read_info(path, info, errmsg);

    if (rv != STORE_OK) {
        return rv;
    }
    struct kv_state* ro = calloc(1, sizeof(*ro));
    if (ro == NULL || (ro->dir = strdup(path)) == NULL) {
        free(ro);
        store_errf(errmsg, "out of memory");
        return STORE_ENOMEM;
    }
    ro->rss_budget = SIZE_MAX;
    atomic_init(&ro->ops, 0);
    ro->st = info->stats;
    int mrc = mdb_env_create(&ro->env.env);
    if (mrc == 0) {
        mdb_env_set_maxdbs(ro->env.env, 8);
        mrc = mdb_env_open(ro->env.env, path,
                           MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS,
                           0644);
    }
    if (mrc == 0) {
        mrc = mdb_txn_begin(ro->env.env, NULL, MDB_RDONLY, &txn);
    }
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "kv", 0, &ro->dbi_kv);
        if (mrc == 0) {
            mrc = mdb_dbi_open(txn, "kv_by_key", MDB_DUPSORT, &ro->dbi_by_key);
        }
        if (mrc == 0) {
            mrc = mdb_dbi_open(txn, "idem", 0, &ro->dbi_idem);
        }
        if (mrc == 0) {
            mrc = mdb_dbi_open(txn, "meta", 0, &ro->dbi_meta);
        }
        /* A committed read transaction keeps its database handles. */
        mrc = mrc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), mrc);
    }
    if (mrc != 0) {
        store_errf(errmsg, "%s: not a readable state snapshot: %s", path,
                   mdb_strerror(mrc));
        kv_snapshot_close_ro(ro);
        return mrc == ENOMEM ? STORE_ENOMEM : STORE_ECORRUPT;
    }
    *out = ro;
    return STORE_OK;
}

void kv_snapshot_close_ro(struct kv_state* ro) {
    if (ro == NULL) {
        return;
    }
    if (ro->env.env != NULL) {
        mdb_env_close(ro->env.env);
    }
    free(ro->dir);
    free(ro);
}

/* XXH64 (seed 0) of the whole file at `path`. */
static int kv_file_checksum(const char* path, uint64_t* out, char* errmsg) {
    XXH64_state_t* h = XXH64_createState();
    uint8_t* buf = malloc(1 << 20);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rv = STORE_OK;

    if (h == NULL || buf == NULL) {
        rv = STORE_ENOMEM;
    } else if (fd < 0) {
        store_errf(errmsg, "%s: %s", path, strerror(errno));
        rv = STORE_EIO;
    } else {
        XXH64_reset(h, KV_RESTORE_CHECKSUM_SEED);
        for (;;) {
            ssize_t got = read(fd, buf, 1 << 20);
            if (got < 0 && errno == EINTR) {
                continue;
            }
            if (got < 0) {
                store_errf(errmsg, "%s: read: %s", path, strerror(errno));
                rv = STORE_EIO;
                break;
            }
            if (got == 0) {
                break;
            }
            XXH64_update(h, buf, (size_t)got);
        }
        *out = XXH64_digest(h);
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    if (h != NULL) {
        XXH64_freeState(h);
    }
    return rv;
}

/* The verification itself, in this process. */
static int kv_verify_file_here(const char* path,
                               struct kv_snapshot_info* info,
                               uint64_t* checksum,
                               char* errmsg) {
    struct kv_state* ro;
    int rv = kv_snapshot_open_ro(path, &ro, info, errmsg);

    if (rv != STORE_OK) {
        return rv;
    }
    rv = kv_verify(ro, NULL, errmsg);
    if (rv == STORE_OK) {
        rv = kv_verify_idem(ro, errmsg);
    }
    kv_snapshot_close_ro(ro);
    if (rv != STORE_OK) {
        return rv == STORE_ENOMEM ? rv : STORE_ECORRUPT;
    }
    return kv_file_checksum(path, checksum, errmsg);
}

/* What the verifying child sends back. */
struct kv_verify_msg {
    int rv;                       /* STORE_E* */
    uint64_t checksum;            /* XXH64 of the file */
    struct kv_snapshot_info info; /* what it holds */
    char err[STORE_ERRMSG_SIZE];  /* message */
};

/* Writes exactly len bytes; false on an error. */
static bool kv_write_all(int fd, const void* buf, size_t len) {
    const uint8_t* p = buf;

    while (len > 0) {
        ssize_t put = write(fd, p, len);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            return false;
        }
        p += put;
        len -= (size_t)put;
    }
    return true;
}

/*
 * LMDB 0.9 trusts the page numbers it reads: a damaged page can make it
 * read outside its map (SIGSEGV, or SIGBUS past the end of the file). A
 * file from outside is therefore read in a child process: a file that
 * crashes the reader is refused instead of crashing the node, and the
 * caller's loop does not wait for a large file to be read. The child only
 * reads the file and writes its verdict to a pipe.
 */
struct kv_snapshot_verifier {
    pid_t pid;                /* the verifying child, 0 once reaped */
    int fd;                   /* read end of its pipe (non-blocking) */
    size_t got;               /* bytes of msg read so far */
    bool done;                /* the verdict is in msg (or failed) */
    int status;               /* the child's wait status */
    char* path;               /* the file */
    struct kv_verify_msg msg; /* the verdict */
};

/* The child: closes what it inherited, verifies, writes, exits. */
static void kv_verify_child(int out, const char* path) {
    struct kv_verify_msg* m = calloc(1, sizeof(*m));

    /* Die of a fault, whatever handler the parent installed (a test
     * framework's would resume the parent's code in the child). */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    /* Inherited sockets (a listener) must not outlive the parent here. */
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++) {
        if (fd != out) {
            close(fd);
        }
    }
    if (m == NULL) {
        _exit(2);
    }
    m->rv = kv_verify_file_here(path, &m->info, &m->checksum, m->err);
    _exit(kv_write_all(out, m, sizeof(*m)) ? 0 : 1);
}

int kv_snapshot_verify_begin(const char* path,
                             struct kv_snapshot_verifier** out,
                             char* errmsg) {
    struct kv_snapshot_verifier* v = calloc(1, sizeof(*v));
    int fds[2];

    if (v == NULL || (v->path = strdup(path)) == NULL) {
        free(v);
        store_errf(errmsg, "out of memory");
        return STORE_ENOMEM;
    }
    if (pipe(fds) != 0) {
        store_errf(errmsg, "pipe: %s", strerror(errno));
        free(v->path);
        free(v);
        return STORE_EIO;
    }
    /* Other threads may fork/exec meanwhile: keep the pipe to ourselves. */
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        kv_verify_child(fds[1], path);
    }
    close(fds[1]);
    if (pid < 0) {
        store_errf(errmsg, "fork: %s", strerror(errno));
        close(fds[0]);
        free(v->path);
        free(v);
        return STORE_EIO;
    }
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    v->pid = pid;
    v->fd = fds[0];
    *out = v;
    return STORE_OK;
}

/* Reaps the child. */
static void kv_verifier_reap(struct kv_snapshot_verifier* v) {
    while (v->pid > 0 && waitpid(v->pid, &v->status, 0) < 0 && errno == EINTR) {
    }
    v->pid = 0;
}

int kv_snapshot_verify_poll(struct kv_snapshot_verifier* v,
                            bool* done,
                            struct kv_snapshot_info* info,
                            uint64_t* checksum,
                            char* errmsg) {
    uint8_t* p = (uint8_t*)&v->msg;

    while (!v->done) {
        ssize_t n = read(v->fd, p + v->got, sizeof(v->msg) - v->got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *done = false;
            return STORE_OK;
        }
        if (n > 0) {
            v->got += (size_t)n;
            continue; /* the child closes the pipe when it exits */
        }
        v->done = true; /* EOF (or an error): the child is gone */
        kv_verifier_reap(v);
    }
    *done = true;
    if (v->got != sizeof(v->msg)) {
        /* Killed by a fault, or a sanitizer that caught it and exited. */
        int st = v->status;
        store_errf(errmsg, "%s: damaged: reading it crashed the reader (%s %d)",
                   v->path, WIFSIGNALED(st) ? "signal" : "exit status",
                   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return STORE_ECORRUPT;
    }
    store_errf(errmsg, "%s", v->msg.err);
    if (info != NULL) {
        *info = v->msg.info;
    }
    if (checksum != NULL) {
        *checksum = v->msg.checksum;
    }
    return v->msg.rv;
}

int kv_snapshot_verifier_fd(const struct kv_snapshot_verifier* v) {
    return v->fd;
}

void kv_snapshot_verify_close(struct kv_snapshot_verifier* v) {
    if (v == NULL) {
        return;
    }
    if (v->pid > 0) {
        kill(v->pid, SIGKILL);
        kv_verifier_reap(v);
    }
    close(v->fd);
    free(v->path);
    free(v);
}

/* The verification in a child process: see kv_snapshot_verify_begin. */
int kv_snapshot_verify_file(const char* path,
                            struct kv_snapshot_info* info,
                            uint64_t* checksum,
                            char* errmsg) {
    struct kv_snapshot_verifier* v;
    bool done = false;
    int rv = kv_snapshot_verify_begin(path, &v, errmsg);

    if (rv != STORE_OK) {
        return rv;
    }
    for (;;) {
        rv = kv_snapshot_verify_poll(v, &done, info, checksum, errmsg);
        if (done) {
            break;
        }
        struct pollfd pfd = {.fd = v->fd, .events = POLLIN};
        (void)poll(&pfd, 1, -1);
    }
    kv_snapshot_verify_close(v);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Create                                                              */

/* Copies kv's environment into the open file fd and syncs it. */
static int kv_copy_to_fd(struct kv_state* kv,
                         int fd,
                         const char* tmp,
                         char* errmsg) {
    int mrc = mdb_env_copyfd2(kv->env.env, fd, MDB_CP_COMPACT);

    if (mrc != 0) {
        int code = store_err_from_mdb(mrc);
        store_errf(errmsg, "%s: snapshot copy failed: %s", tmp,
                   mdb_strerror(mrc));
        return code == STORE_EDISKFULL ? code : STORE_EIO;
    }
    if (fsync(fd) != 0) {
        int err = errno;
        store_errf(errmsg, "%s: fsync: %s", tmp, strerror(err));
        return err == ENOSPC || err == EDQUOT ? STORE_EDISKFULL : STORE_EIO;
    }
    return STORE_OK;
}

int kv_snapshot_create(struct kv_state* kv,
                       const char* path,
                       struct kv_snapshot_info* info,
                       char* errmsg) {
    struct kv_snapshot_info local;
    char* tmp = kv_suffix(path, ".tmp");

    if (tmp == NULL) {
        return STORE_ENOMEM;
    }
    if (info == NULL) {
        info = &local;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        store_errf(errmsg, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return STORE_EIO;
    }
    int rv = kv_copy_to_fd(kv, fd, tmp, errmsg);
    close(fd);
    kv_trim_memory(kv); /* the copy mapped every page of the state */
    if (rv == STORE_OK) {
        rv = kv_snapshot_read_info(tmp, info, errmsg);
    }
    if (rv == STORE_OK && rename(tmp, path) != 0) {
        store_errf(errmsg, "%s: rename: %s", path, strerror(errno));
        rv = STORE_EIO;
    }
    if (rv == STORE_OK) {
        rv = kv_fsync_parent(path);
    }
    if (rv != STORE_OK) {
        unlink(tmp);
    }
    free(tmp);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Stream                                                              */

int kv_snapshot_reader_open(const char* path,
                            struct kv_snapshot_reader** out,
                            struct kv_snapshot_info* info,
                            char* errmsg) {
    struct stat st;

    if (info != NULL) {
        int rv = kv_snapshot_read_info(path, info, errmsg);
        if (rv != STORE_OK) {
            return rv;
        }
    }
    struct kv_snapshot_reader* r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return STORE_ENOMEM;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0 || fstat(r->fd, &st) != 0) {
        store_errf(errmsg, "%s: %s", path, strerror(errno));
        if (r->fd >= 0) {
            close(r->fd);
        }
        free(r);
        return STORE_EIO;
    }
    r->size = (uint64_t)st.st_size;
    *out = r;
    return STORE_OK;
}

uint64_t kv_snapshot_reader_size(const struct kv_snapshot_reader* r) {
    return r->size;
}

int kv_snapshot_reader_read(struct kv_snapshot_reader* r,
                            uint64_t offset,
                            uint8_t* buf,
                            size_t cap,
                            size_t* n,
                            bool* done) {
    *n = 0;
    if (offset > r->size) {
        return STORE_EINVAL;
    }
    if (cap > KV_SNAPSHOT_CHUNK_MAX) {
        cap = KV_SNAPSHOT_CHUNK_MAX;
    }
    if (cap > r->size - offset) {
        cap = (size_t)(r->size - offset);
    }
    while (*n < cap) {
        ssize_t got = pread(r->fd, buf + *n, cap - *n, (off_t)(offset + *n));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return STORE_EIO;
        }
        *n += (size_t)got;
    }
    *done = offset + *n == r->size;
    return STORE_OK;
}

void kv_snapshot_reader_close(struct kv_snapshot_reader* r) {
    if (r == NULL) {
        return;
    }
    close(r->fd);
    free(r);
}

/* ------------------------------------------------------------------ */
/* Install                                                             */

int kv_snapshot_writer_open(struct kv_state* kv,
                            uint64_t total_size,
                            struct kv_snapshot_writer** out,
                            char* errmsg) {
    struct kv_snapshot_writer* w = calloc(1, sizeof(*w));

    if (w == NULL) {
        return STORE_ENOMEM;
    }
    w->kv = kv;
    w->fd = -1;
    w->total = total_size;
    w->incoming = kv_suffix(kv->dir, ".incoming");
    w->file =
        w->incoming != NULL ? store_path_join(w->incoming, "data.mdb") : NULL;
    if (w->file == NULL) {
        kv_snapshot_writer_abort(w);
        return STORE_ENOMEM;
    }
    if (store_rmtree(w->incoming) != STORE_OK ||
        store_mkdirs(w->incoming) != STORE_OK) {
        store_errf(errmsg, "%s: cannot create: %s", w->incoming,
                   strerror(errno));
        kv_snapshot_writer_abort(w);
        return STORE_EIO;
    }
    w->fd = open(w->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        store_errf(errmsg, "%s: %s", w->file, strerror(errno));
        kv_snapshot_writer_abort(w);
        return STORE_EIO;
    }
    *out = w;
    return STORE_OK;
}

int kv_snapshot_writer_write(struct kv_snapshot_writer* w,
                             uint64_t offset,
                             const uint8_t* data,
                             size_t len,
                             uint64_t* next_offset) {
    int rv = STORE_OK;

    if (offset > w->received || len > KV_SNAPSHOT_CHUNK_MAX ||
        (w->total > 0 && offset + len > w->total)) {
        rv = STORE_EINVAL;
    } else if (offset + len > w->received) {
        size_t skip = (size_t)(w->received - offset);
        size_t left = len - skip;
        while (left > 0) {
            ssize_t put =
                pwrite(w->fd, data + (len - left), left, (off_t)w->received);
            if (put < 0 && errno == EINTR) {
                continue;
            }
            if (put <= 0) {
                rv = errno == ENOSPC || errno == EDQUOT ? STORE_EDISKFULL
                                                        : STORE_EIO;
                break;
            }
            w->received += (uint64_t)put;
            left -= (size_t)put;
        }
    }
    if (next_offset != NULL) {
        *next_offset = w->received;
    }
    return rv;
}

uint64_t kv_snapshot_writer_received(const struct kv_snapshot_writer* w) {
    return w->received;
}

void kv_snapshot_writer_abort(struct kv_snapshot_writer* w) {
    if (w == NULL) {
        return;
    }
    if (w->fd >= 0) {
        close(w->fd);
    }
    if (w->incoming != NULL) {
        store_rmtree(w->incoming);
    }
    free(w->incoming);
    free(w->file);
    free(w);
}

/* Syncs the received file, verifies it as a state and marks it READY. */
static int kv_writer_verify(struct kv_snapshot_writer* w, char* errmsg) {
    struct kv_state* copy;
    struct kv_stats re;

    if (w->total > 0 ? w->received != w->total : w->received == 0) {
        store_errf(errmsg, "snapshot incomplete: %llu of %llu bytes",
                   (unsigned long long)w->received,
                   (unsigned long long)w->total);
        return STORE_EINVAL;
    }
    if (fsync(w->fd) != 0) {
        store_errf(errmsg, "%s: fsync: %s", w->file, strerror(errno));
        return STORE_EIO;
    }
    close(w->fd);
    w->fd = -1;
    int rv = kv_open(w->incoming, &w->kv->opts, &copy, errmsg);
    if (rv != STORE_OK) {
        return rv == STORE_EBUSY ? STORE_EIO : STORE_ECORRUPT;
    }
    rv = kv_verify(copy, &re, errmsg);
    kv_close(copy);
    if (rv != STORE_OK) {
        return STORE_ECORRUPT;
    }
    char* ready = store_path_join(w->incoming, "READY");
    int fd =
        ready != NULL ? open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (fd < 0 || fsync(fd) != 0 || store_fsync_dir(w->incoming) != STORE_OK) {
        rv = STORE_EIO;
        store_errf(errmsg, "%s: cannot mark ready", w->incoming);
    }
    if (fd >= 0) {
        close(fd);
    }
    free(ready);
    return rv;
}

/* Puts the incoming directory in place of kv->dir (kv is closed). */
static int kv_swap_dirs(struct kv_snapshot_writer* w, char* errmsg) {
    const char* dir = w->kv->dir;

    if (syscall(SYS_renameat2, AT_FDCWD, w->incoming, AT_FDCWD, dir,
                RENAME_EXCHANGE) == 0) {
        return kv_fsync_parent(dir);
    }
    if (errno != EINVAL && errno != ENOSYS) {
        store_errf(errmsg, "%s: exchange with %s: %s", dir, w->incoming,
                   strerror(errno));
        return STORE_EIO;
    }
    /* No RENAME_EXCHANGE here: two renames; kv_open completes them. */
    char* old = kv_suffix(dir, ".old");
    int rv = STORE_OK;
    if (old == NULL || rename(dir, old) != 0 || rename(w->incoming, dir) != 0) {
        store_errf(errmsg, "%s: swap failed: %s", dir, strerror(errno));
        rv = STORE_EIO;
    }
    if (rv == STORE_OK) {
        rv = kv_fsync_parent(dir);
        store_rmtree(old);
    }
    free(old);
    return rv;
}

int kv_snapshot_writer_finish(struct kv_snapshot_writer* w,
                              struct kv_snapshot_info* info,
                              char* errmsg) {
    struct kv_state* kv = w->kv;
    int rv = kv_writer_verify(w, errmsg);

    if (rv != STORE_OK) {
        kv_snapshot_writer_abort(w);
        return rv;
    }
    kv_env_close(kv);
    rv = kv_swap_dirs(w, errmsg);
    /* Whatever happened, reopen what is in place now; kv_open's recovery
     * finishes or rolls back an interrupted swap. */
    int rrv = kv_snapshot_recover_dirs(kv->dir, errmsg);
    if (rrv == STORE_OK) {
        rrv = kv_env_reopen(kv, errmsg);
    }
    kv_snapshot_writer_abort(w);
    if (rv == STORE_OK) {
        rv = rrv;
    }
    if (rv == STORE_OK && info != NULL) {
        memset(info, 0, sizeof(*info));
        rv = kv_stats(kv, &info->stats);
        raft_index conf_index;
        if (rv == STORE_OK) {
            rv = kv_conf(kv, info->conf, sizeof(info->conf), &info->conf_len,
                         &conf_index);
        }
    }
    return rv;
}

int kv_snapshot_install_file(struct kv_state* kv,
                             const char* path,
                             struct kv_snapshot_info* info,
                             char* errmsg) {
    struct kv_snapshot_reader* r;
    struct kv_snapshot_writer* w;
    uint64_t off = 0;
    bool done = false;
    int rv = kv_snapshot_reader_open(path, &r, NULL, errmsg);

    if (rv != STORE_OK) {
        return rv;
    }
    uint8_t* buf = malloc(KV_SNAPSHOT_CHUNK_MAX);
    rv = buf == NULL ? STORE_ENOMEM
                     : kv_snapshot_writer_open(kv, r->size, &w, errmsg);
    while (rv == STORE_OK && !done) {
        size_t n;
        rv = kv_snapshot_reader_read(r, off, buf, KV_SNAPSHOT_CHUNK_MAX, &n,
                                     &done);
        if (rv == STORE_OK) {
            rv = kv_snapshot_writer_write(w, off, buf, n, &off);
        }
        if (rv != STORE_OK) {
            kv_snapshot_writer_abort(w);
        }
    }
    if (rv == STORE_OK) {
        rv = kv_snapshot_writer_finish(w, info, errmsg);
    }
    free(buf);
    kv_snapshot_reader_close(r);
    return rv;
}

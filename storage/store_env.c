/*
 * store_env.c - LMDB environment helpers (see store_env.h).
 */
#include "store_env.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "store_err.h"

/* Pages LMDB writes when it creates an environment (two meta pages). */
#define STORE_ENV_META_PAGES 2
/* Free bytes under which an I/O error is taken for a full file system. */
#define STORE_ENV_FULL_BYTES ((uint64_t)1 << 20)

void store_errf(char* errmsg, const char* fmt, ...) {
    va_list ap;

    if (errmsg == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(errmsg, STORE_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

uint64_t store_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void store_put_le64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint64_t store_get_le64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

void store_put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint32_t store_get_le32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

void store_put_be64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

uint64_t store_get_be64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int store_durability_parse(const char* text, int* out) {
    static const char* const names[] = {"strict", "balanced", "fast"};

    if (text == NULL) {
        return STORE_EINVAL;
    }
    for (int i = 0; i < 3; i++) {
        if (strcmp(text, names[i]) == 0) {
            *out = i;
            return STORE_OK;
        }
    }
    return STORE_EINVAL;
}

const char* store_durability_name(int durability) {
    switch (durability) {
        case STORE_DURABILITY_STRICT:
            return "strict";
        case STORE_DURABILITY_BALANCED:
            return "balanced";
        case STORE_DURABILITY_FAST:
            return "fast";
        default:
            return "unknown";
    }
}

char* store_path_join(const char* a, const char* b) {
    size_t la = strlen(a);
    size_t lb = strlen(b);
    char* p = malloc(la + lb + 2);

    if (p == NULL) {
        return NULL;
    }
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

int store_mkdirs(const char* path) {
    char* p = strdup(path);
    int rv = STORE_OK;

    if (p == NULL) {
        return STORE_ENOMEM;
    }
    for (char* s = p + 1; *s != '\0'; s++) {
        if (*s != '/') {
            continue;
        }
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rv = STORE_EIO;
        }
        *s = '/';
    }
    if (rv == STORE_OK && mkdir(p, 0755) != 0 && errno != EEXIST) {
        rv = STORE_EIO;
    }
    free(p);
    return rv;
}

int store_fsync_dir(const char* path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = STORE_OK;

    if (fd < 0) {
        return STORE_EIO;
    }
    if (fsync(fd) != 0) {
        rv = STORE_EIO;
    }
    close(fd);
    return rv;
}

int store_rmtree(const char* path) {
    struct stat st;
    int rv = STORE_OK;

    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? STORE_OK : STORE_EIO;
    }
    if (!S_ISDIR(st.st_mode)) {
        return unlink(path) == 0 ? STORE_OK : STORE_EIO;
    }
    DIR* d = opendir(path);
    if (d == NULL) {
        return STORE_EIO;
    }
    struct dirent* de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char* child = store_path_join(path, de->d_name);
        if (child == NULL) {
            rv = STORE_ENOMEM;
            break;
        }
        int crv = store_rmtree(child);
        free(child);
        if (crv != STORE_OK) {
            rv = crv;
            break;
        }
    }
    closedir(d);
    if (rv == STORE_OK && rmdir(path) != 0) {
        rv = STORE_EIO;
    }
    return rv;
}

/* Takes an exclusive, non-blocking flock on <dir>/LOCK. */
static int store_env_lock(struct store_env* e, char* errmsg) {
    char* path = store_path_join(e->dir, "LOCK");

    if (path == NULL) {
        return STORE_ENOMEM;
    }
    e->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (e->lock_fd < 0) {
        store_errf(errmsg, "%s: cannot open: %s", path, strerror(errno));
        free(path);
        return STORE_EIO;
    }
    if (flock(e->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        store_errf(
            errmsg, "%s: %s", path,
            err == EWOULDBLOCK ? "in use by another process" : strerror(err));
        close(e->lock_fd);
        e->lock_fd = -1;
        free(path);
        return err == EWOULDBLOCK ? STORE_EBUSY : STORE_EIO;
    }
    free(path);
    return STORE_OK;
}

/*
 * Refuses a data.mdb that exists but cannot hold the two meta pages: LMDB
 * would initialise an empty file as a new environment, silently dropping a
 * log that was truncated to nothing.
 */
static int store_env_precheck(const struct store_env* e, char* errmsg) {
    char* path = store_path_join(e->dir, "data.mdb");
    struct stat st;
    int rv = STORE_OK;
    long page = sysconf(_SC_PAGESIZE);

    if (path == NULL) {
        return STORE_ENOMEM;
    }
    if (stat(path, &st) == 0 &&
        st.st_size < (off_t)(STORE_ENV_META_PAGES * page)) {
        store_errf(errmsg,
                   "%s is truncated: %lld bytes, an LMDB file has at least "
                   "%ld; refusing to start (move the directory away to "
                   "start empty)",
                   path, (long long)st.st_size, STORE_ENV_META_PAGES * page);
        rv = STORE_ECORRUPT;
    }
    free(path);
    return rv;
}

int store_env_check_size(struct store_env* e, char* errmsg) {
    MDB_envinfo info;
    MDB_stat mst;
    struct stat st;
    int fd;

    if (mdb_env_info(e->env, &info) != 0 || mdb_env_stat(e->env, &mst) != 0 ||
        mdb_env_get_fd(e->env, &fd) != 0 || fstat(fd, &st) != 0) {
        store_errf(errmsg, "%s: cannot stat the environment", e->dir);
        return STORE_EIO;
    }
    uint64_t needed = ((uint64_t)info.me_last_pgno + 1) * mst.ms_psize;
    if ((uint64_t)st.st_size < needed) {
        store_errf(errmsg,
                   "%s/data.mdb is truncated: %lld bytes, its meta page "
                   "references %llu",
                   e->dir, (long long)st.st_size, (unsigned long long)needed);
        return STORE_ECORRUPT;
    }
    return STORE_OK;
}

static unsigned store_env_flags(int durability) {
    switch (durability) {
        case STORE_DURABILITY_FAST:
            return MDB_NOSYNC;
        default:
            return MDB_NOMETASYNC;
    }
}

/* mdb_env_open and the checks after it; e->env is created. */
static int store_env_open_lmdb(struct store_env* e,
                               const struct store_env_config* cfg,
                               char* errmsg) {
    int mrc = mdb_env_set_maxdbs(e->env, cfg->max_dbs);
    if (mrc == 0) {
        mrc = mdb_env_set_mapsize(e->env, e->map_size);
    }
    if (mrc == 0) {
        mrc = mdb_env_open(
            e->env, e->dir,
            MDB_NOTLS | store_env_flags(cfg->durability) | cfg->extra_flags,
            0644);
    }
    if (mrc != 0) {
        const char* why = mrc == MDB_INVALID ? "not an LMDB file (garbage)"
                          : mrc == MDB_VERSION_MISMATCH
                              ? "written by another LMDB version"
                              : mdb_strerror(mrc);
        store_errf(errmsg, "%s/data.mdb: cannot open: %s", e->dir, why);
        return store_err_from_mdb(mrc);
    }
    int dead = 0;
    mdb_reader_check(e->env, &dead);
    MDB_envinfo info;
    if (mdb_env_info(e->env, &info) == 0) {
        e->map_size = info.me_mapsize;
    }
    return store_env_check_size(e, errmsg);
}

int store_env_open(struct store_env* e,
                   const char* dir,
                   const struct store_env_config* cfg,
                   char* errmsg) {
    int rv;

    memset(e, 0, sizeof(*e));
    e->lock_fd = -1;
    if (dir == NULL || cfg == NULL || cfg->max_dbs == 0 ||
        cfg->durability < STORE_DURABILITY_STRICT ||
        cfg->durability > STORE_DURABILITY_FAST) {
        store_errf(errmsg, "invalid environment parameters");
        return STORE_EINVAL;
    }
    e->dir = strdup(dir);
    if (e->dir == NULL) {
        return STORE_ENOMEM;
    }
    e->durability = cfg->durability;
    e->map_size = cfg->map_size ? cfg->map_size : STORE_ENV_MAP_SIZE_DEFAULT;
    e->fast_flush_ms = cfg->fast_flush_ms ? cfg->fast_flush_ms
                                          : STORE_ENV_FAST_FLUSH_MS_DEFAULT;
    e->last_flush_ms = store_now_ms();
    if (store_mkdirs(dir) != STORE_OK) {
        store_errf(errmsg, "%s: cannot create directory: %s", dir,
                   strerror(errno));
        rv = STORE_EIO;
        goto fail;
    }
    rv = store_env_lock(e, errmsg);
    if (rv != STORE_OK) {
        goto fail;
    }
    rv = store_env_precheck(e, errmsg);
    if (rv != STORE_OK) {
        goto fail;
    }
    int mrc = mdb_env_create(&e->env);
    if (mrc != 0) {
        e->env = NULL;
        store_errf(errmsg, "mdb_env_create: %s", mdb_strerror(mrc));
        rv = store_err_from_mdb(mrc);
        goto fail;
    }
    rv = store_env_open_lmdb(e, cfg, errmsg);
    if (rv != STORE_OK) {
        goto fail;
    }
    return STORE_OK;
fail:
    if (e->env != NULL) {
        mdb_env_close(e->env);
    }
    if (e->lock_fd >= 0) {
        close(e->lock_fd);
    }
    free(e->dir);
    memset(e, 0, sizeof(*e));
    e->lock_fd = -1;
    return rv;
}

void store_env_close(struct store_env* e) {
    if (e == NULL || e->env == NULL) {
        return;
    }
    mdb_env_sync(e->env, 1);
    mdb_env_close(e->env);
    if (e->lock_fd >= 0) {
        close(e->lock_fd);
    }
    free(e->dir);
    memset(e, 0, sizeof(*e));
    e->lock_fd = -1;
}

/*
 * LMDB reports a short page write as EIO ("TODO: Use which error code?"
 * in mdb_page_flush), which is what a nearly full file system produces.
 * EIO with (almost) no free space left is therefore disk full.
 */
static int store_env_classify(struct store_env* e, int mrc) {
    struct statvfs vfs;
    int code = store_err_from_mdb(mrc);

    if (code == STORE_EIO && statvfs(e->dir, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < STORE_ENV_FULL_BYTES) {
        code = STORE_EDISKFULL;
    }
    return code;
}

int store_env_flush(struct store_env* e) {
    int mrc = mdb_env_sync(e->env, 1);

    if (mrc != 0) {
        return store_env_classify(e, mrc);
    }
    e->meta_dirty = false;
    e->last_flush_ms = store_now_ms();
    return STORE_OK;
}

int store_env_sync_batch(struct store_env* e, bool force_meta) {
    if (!e->meta_dirty) {
        return STORE_OK;
    }
    switch (e->durability) {
        case STORE_DURABILITY_STRICT:
            return store_env_flush(e);
        case STORE_DURABILITY_BALANCED:
            return force_meta ? store_env_flush(e) : STORE_OK;
        default:
            if (force_meta ||
                store_now_ms() - e->last_flush_ms >= e->fast_flush_ms) {
                return store_env_flush(e);
            }
            return STORE_OK;
    }
}

int store_env_set_map_size(struct store_env* e, size_t bytes) {
    int mrc = mdb_env_set_mapsize(e->env, bytes);
    MDB_envinfo info;

    if (mrc != 0) {
        return store_err_from_mdb(mrc);
    }
    if (mdb_env_info(e->env, &info) == 0) {
        e->map_size = info.me_mapsize;
    }
    return STORE_OK;
}

int store_env_commit(struct store_env* e, MDB_txn* txn) {
    int mrc = mdb_txn_commit(txn);

    if (mrc != 0) {
        return store_env_classify(e, mrc);
    }
    e->meta_dirty = true;
    return STORE_OK;
}

size_t store_env_trim(struct store_env* e) {
    struct stat st;
    char line[512];
    size_t advised = 0;
    char* path = store_path_join(e->dir, "data.mdb");

    if (path == NULL || stat(path, &st) != 0) {
        free(path);
        return 0;
    }
    free(path);
    FILE* maps = fopen("/proc/self/maps", "r");
    if (maps == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), maps) != NULL) {
        unsigned long start, end, ino;
        unsigned maj, mnr;
        if (sscanf(line, "%lx-%lx %*s %*s %x:%x %lu", &start, &end, &maj, &mnr,
                   &ino) == 5 &&
            ino == (unsigned long)st.st_ino && maj == major(st.st_dev) &&
            mnr == minor(st.st_dev) &&
            madvise((void*)start, end - start, MADV_DONTNEED) == 0) {
            advised += end - start;
        }
    }
    fclose(maps);
    return advised;
}

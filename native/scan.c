/*
 * scanDir(dir: Buffer, alg: 0 | 1 | 2, hashMax: number): Promise<Buffer>
 *
 * Reads one directory whole on the libuv thread pool: readdir, then for every entry but "."
 * and ".." fstatat(AT_SYMLINK_NOFOLLOW), the content composefs needs (regular files of at most
 * 64 bytes: one read() of st_size bytes; symlinks: the target) and every xattr (llistxattr +
 * lgetxattr on dir/name, or flistxattr + fgetxattr on the file when it was opened anyway). With alg 1 (SHA-256) or 2 (SHA-512), regular files of 65..hashMax
 * bytes with a single link also get their fs-verity digest here (read up to st_size + 1 bytes,
 * so growth is noticed); the others are left to the caller. A directory of a 500k-file tree
 * costs one JS<->C crossing instead of about ten per entry.
 *
 * The result is one packed little-endian buffer of records, in readdir order:
 *
 *   entry:  u8 1, u16 name_len, name, u8 kind (1 dir, 2 reg, 3 lnk, 4 chr, 5 blk, 6 fifo,
 *           7 sock), u32 st_mode, u32 uid, u32 gid, u32 mtime_nsec, i64 mtime_sec, u64 size,
 *           u64 dev, u64 ino, u64 rdev,
 *           u8 content (0 none, 1 inline data, 2 symlink target: u32 len + bytes;
 *                       3 fs-verity digest: u8 len + bytes),
 *           u16 xattr_count, then per xattr: u16 name_len, name, u32 value_len, value
 *   error:  u8 2, u16 name_len, name (empty: the directory itself), u8 op, u32 errno (positive;
 *           for SCAN_CHANGED 1 = grew, 0 = shrank), u64 st_size (SCAN_CHANGED), u8 syscall_len,
 *           syscall — always the last record
 *
 * The first failure ends the directory: the records before it are still returned, and the
 * caller reports the error naming the path.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfs.h"

/* What failed (the error record's op). */
enum {
  SCAN_OPEN_DIR = 1,  /* open / readdir of the directory */
  SCAN_STAT = 2,      /* fstatat of an entry */
  SCAN_TYPE = 3,      /* readdir's d_type disagrees with fstatat */
  SCAN_READ = 4,      /* inline content or symlink target */
  SCAN_XATTR = 5,     /* llistxattr / lgetxattr */
  SCAN_HASH = 6,      /* open / read while hashing */
  SCAN_CHANGED = 7,   /* a hashed file's size differs from st_size */
};

#define INLINE_MAX 64

typedef struct {
  unsigned char *data;
  size_t len, cap;
  int oom;
} out_buf;

static unsigned char *reserve(out_buf *o, size_t n) {
  if (o->oom) return NULL;
  if (o->len + n > o->cap) {
    size_t cap = o->cap ? o->cap : 16384;
    while (cap < o->len + n) cap *= 2;
    unsigned char *d = realloc(o->data, cap);
    if (!d) {
      o->oom = 1;
      return NULL;
    }
    o->data = d;
    o->cap = cap;
  }
  unsigned char *p = o->data + o->len;
  o->len += n;
  return p;
}

static void put(out_buf *o, const void *src, size_t n) {
  unsigned char *p = reserve(o, n);
  if (p && n) memcpy(p, src, n);
}
static void put_u8(out_buf *o, unsigned v) {
  unsigned char b = (unsigned char)v;
  put(o, &b, 1);
}
static void put_u16(out_buf *o, unsigned v) {
  unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
  put(o, b, 2);
}
static void put_u32(out_buf *o, uint32_t v) {
  unsigned char b[4];
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
  put(o, b, 4);
}
static void put_u64(out_buf *o, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  put(o, b, 8);
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *dir;
  size_t dir_len;
  int alg;
  uint64_t hash_max;
  out_buf out;
} scan_job;

static void put_error(out_buf *o, const char *name, size_t name_len, int op, int err, uint64_t extra, const char *syscall) {
  size_t sl = strlen(syscall);
  put_u8(o, 2);
  put_u16(o, (unsigned)name_len);
  put(o, name, name_len);
  put_u8(o, (unsigned)op);
  put_u32(o, (uint32_t)err);
  put_u64(o, extra);
  put_u8(o, (unsigned)sl);
  put(o, syscall, sl);
}

static int kind_of(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFDIR: return 1;
    case S_IFREG: return 2;
    case S_IFLNK: return 3;
    case S_IFCHR: return 4;
    case S_IFBLK: return 5;
    case S_IFIFO: return 6;
    case S_IFSOCK: return 7;
    default: return 0;
  }
}

static int kind_of_dtype(unsigned char t) {
  switch (t) {
    case DT_DIR: return 1;
    case DT_REG: return 2;
    case DT_LNK: return 3;
    case DT_CHR: return 4;
    case DT_BLK: return 5;
    case DT_FIFO: return 6;
    case DT_SOCK: return 7;
    default: return 0; /* DT_UNKNOWN: the filesystem does not say; fstatat decides */
  }
}

static int open_at(int dfd, const char *name) {
  int fd;
  do fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd;
}

static void scan_execute(napi_env env, void *data) {
  (void)env;
  scan_job *j = data;
  out_buf *o = &j->out;
  const sha_impl *h = (j->alg == 1 || j->alg == 2) && sha_load() ? &sha_impls[j->alg] : NULL;
  char *path = NULL; /* dir + "/" + name, for the xattr calls */
  size_t path_cap = 0;
  char *link = NULL;
  size_t link_cap = 0;

  int dfd;
  do dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  while (dfd < 0 && errno == EINTR);
  if (dfd < 0) {
    put_error(o, "", 0, SCAN_OPEN_DIR, errno, 0, "open");
    return;
  }
  DIR *d = fdopendir(dfd);
  if (!d) {
    put_error(o, "", 0, SCAN_OPEN_DIR, errno, 0, "fdopendir");
    close(dfd);
    return;
  }
  size_t base = j->dir_len + (j->dir_len > 0 && j->dir[j->dir_len - 1] == '/' ? 0 : 1);
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) {
      if (errno) put_error(o, "", 0, SCAN_OPEN_DIR, errno, 0, "readdir");
      break;
    }
    const char *name = de->d_name;
    if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
    size_t nlen = strlen(name);
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      put_error(o, name, nlen, SCAN_STAT, errno, 0, "lstat");
      break;
    }
    int kind = kind_of(st.st_mode);
    int dkind = kind_of_dtype(de->d_type);
    if (kind == 0 || (dkind != 0 && dkind != kind)) {
      put_error(o, name, nlen, SCAN_TYPE, kind == 0 ? ENOTSUP : ESTALE, 0, "fstatat");
      break;
    }

    /* Content first: a failure must not leave a half-written entry record. */
    int ckind = 0;
    const unsigned char *cdata = NULL;
    size_t clen = 0;
    unsigned char inl[INLINE_MAX];
    unsigned char digest[64];
    /* A regular file opened for its content stays open for its xattrs (no second path walk). */
    int ofd = -1;
    if (kind == 2 && st.st_size <= INLINE_MAX) {
      int fd = open_at(dfd, name);
      if (fd < 0) {
        put_error(o, name, nlen, SCAN_READ, errno, 0, "open");
        break;
      }
      ssize_t got = 0;
      if (st.st_size > 0) {
        /* composefs-rs does ONE read(): a short read silently truncates. */
        do got = read(fd, inl, (size_t)st.st_size);
        while (got < 0 && errno == EINTR);
      }
      if (got < 0) {
        put_error(o, name, nlen, SCAN_READ, errno, 0, "read");
        close(fd);
        break;
      }
      ofd = fd;
      ckind = 1;
      cdata = inl;
      clen = (size_t)got;
    } else if (kind == 2 && h && st.st_nlink == 1 && (uint64_t)st.st_size <= j->hash_max) {
      int fd = open_at(dfd, name);
      if (fd < 0) {
        put_error(o, name, nlen, SCAN_HASH, errno, 0, "open");
        break;
      }
      int64_t total = verity_fd(fd, h, (uint64_t)st.st_size, -1, digest);
      if (total < 0) {
        put_error(o, name, nlen, SCAN_HASH, errno, 0, "read");
        close(fd);
        break;
      }
      if ((uint64_t)total != (uint64_t)st.st_size) {
        put_error(o, name, nlen, SCAN_CHANGED, (uint64_t)total > (uint64_t)st.st_size, (uint64_t)st.st_size, "read");
        close(fd);
        break;
      }
      ofd = fd;
      ckind = 3;
      cdata = digest;
      clen = h->dsize;
    } else if (kind == 3) {
      size_t want = st.st_size > 0 ? (size_t)st.st_size + 1 : PATH_MAX;
      ssize_t got;
      for (;;) {
        if (link_cap < want) {
          char *nl = realloc(link, want);
          if (!nl) {
            errno = ENOMEM;
            got = -1;
            break;
          }
          link = nl;
          link_cap = want;
        }
        got = readlinkat(dfd, name, link, link_cap);
        if (got < 0 || (size_t)got < link_cap) break;
        want = link_cap * 2; /* filled the buffer: the target may be longer */
      }
      if (got < 0) {
        put_error(o, name, nlen, SCAN_READ, errno, 0, "readlink");
        break;
      }
      ckind = 2;
      cdata = (const unsigned char *)link;
      clen = (size_t)got;
    }

    if (base + nlen + 1 > path_cap) {
      size_t cap = base + nlen + 1 + 256;
      char *np = realloc(path, cap);
      if (!np) {
        put_error(o, name, nlen, SCAN_XATTR, ENOMEM, 0, "malloc");
        if (ofd >= 0) close(ofd);
        break;
      }
      path = np;
      path_cap = cap;
      memcpy(path, j->dir, j->dir_len);
      if (base > j->dir_len) path[j->dir_len] = '/';
    }
    memcpy(path + base, name, nlen + 1);
    xattr_list xl;
    fail_info f = {0};
    int xrc = read_xattrs_c(path, base + nlen, ofd, &xl, &f);
    if (ofd >= 0) close(ofd);
    if (xrc < 0) {
      put_error(o, name, nlen, SCAN_XATTR, f.err, 0, f.syscall);
      free(f.path);
      break;
    }

    put_u8(o, 1);
    put_u16(o, (unsigned)nlen);
    put(o, name, nlen);
    put_u8(o, (unsigned)kind);
    put_u32(o, (uint32_t)st.st_mode);
    put_u32(o, (uint32_t)st.st_uid);
    put_u32(o, (uint32_t)st.st_gid);
    put_u32(o, (uint32_t)st.st_mtim.tv_nsec);
    put_u64(o, (uint64_t)(int64_t)st.st_mtim.tv_sec);
    put_u64(o, (uint64_t)st.st_size);
    put_u64(o, (uint64_t)st.st_dev);
    put_u64(o, (uint64_t)st.st_ino);
    put_u64(o, (uint64_t)st.st_rdev);
    put_u8(o, (unsigned)ckind);
    if (ckind == 3) {
      put_u8(o, (unsigned)clen);
      put(o, cdata, clen);
    } else if (ckind != 0) {
      put_u32(o, (uint32_t)clen);
      put(o, cdata, clen);
    }
    put_u16(o, (unsigned)xl.count);
    for (size_t i = 0; i < xl.count; i++) {
      put_u16(o, (unsigned)xl.pairs[i].name_len);
      put(o, xl.pairs[i].name, xl.pairs[i].name_len);
      put_u32(o, (uint32_t)xl.pairs[i].value_len);
      put(o, xl.pairs[i].value, xl.pairs[i].value_len);
    }
    free_list(&xl);
    if (o->oom) break;
  }
  closedir(d);
  free(path);
  free(link);
}

static void scan_free(scan_job *j) {
  free(j->dir);
  free(j->out.data);
  free(j);
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  scan_job *j = data;
  napi_value result = NULL, err = NULL, msg;
  if (status != napi_ok) {
    napi_create_string_utf8(env, "scanDir: cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
  } else if (j->out.oom) {
    napi_value code;
    napi_create_string_utf8(env, "ENOMEM", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "scanDir: out of memory", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &err);
  } else {
    void *dst;
    if (napi_create_buffer_copy(env, j->out.len, j->out.len ? (const void *)j->out.data : "", &dst, &result) != napi_ok) {
      napi_value pending;
      napi_get_and_clear_last_exception(env, &pending);
      napi_create_string_utf8(env, "scanDir: failed to build the result", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &err);
      result = NULL;
    }
  }
  if (result) napi_resolve_deferred(env, j->deferred, result);
  else napi_reject_deferred(env, j->deferred, err);
  napi_delete_async_work(env, j->work);
  scan_free(j);
}

napi_value js_scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int32_t alg = 0;
  double hash_max = 0;
  if (argc < 3 || napi_get_value_int32(env, argv[1], &alg) != napi_ok || napi_get_value_double(env, argv[2], &hash_max) != napi_ok ||
      alg < 0 || alg > 2 || !(hash_max >= 0)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "scanDir(dir: Buffer, alg: 0 | 1 | 2, hashMax: number)");
    return NULL;
  }
  scan_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->dir = arg_bytes(env, argv[0], &j->dir_len);
  if (!j->dir) {
    free(j);
    return NULL;
  }
  j->alg = alg;
  j->hash_max = hash_max > 9007199254740991.0 ? UINT64_MAX : (uint64_t)hash_max;
  napi_value promise, resource_name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "cfsScanDir", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, scan_execute, scan_complete, j, &j->work) != napi_ok) {
    scan_free(j);
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    scan_free(j);
    return NULL;
  }
  return promise;
}

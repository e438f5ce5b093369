/*
 * Declarations shared by the addon's C files: module.c (registration, N-API helpers), xattrs.c
 * (extended attributes), verity.c (fs-verity hashing) and scan.c (whole-directory reads).
 */
#ifndef CFS_NATIVE_H
#define CFS_NATIVE_H

#include <stddef.h>
#include <stdint.h>
#include <node_api.h>

typedef struct {
  char *name;      /* NUL-terminated as returned by the kernel */
  size_t name_len; /* without the NUL */
  char *value;
  size_t value_len;
} xattr_pair;

typedef struct {
  xattr_pair *pairs;
  size_t count;
} xattr_list;

typedef struct {
  int err;           /* errno, 0 = ok */
  const char *syscall;
  char *path;        /* malloc'd copy of the failing path */
  size_t path_len;
} fail_info;

void free_list(xattr_list *l);
void set_fail(fail_info *f, int err, const char *syscall, const char *path, size_t path_len);
/*
 * All xattrs of `path` (NUL-terminated), not following a final symlink; with fd >= 0, of that
 * open file instead (no path walk; `path` only names it in errors). 0, or -1 with *f set.
 */
int read_xattrs_c(const char *path, size_t path_len, int fd, xattr_list *out, fail_info *f);
napi_value make_error(napi_env env, const fail_info *f);
/* A Buffer holding a copy of len bytes (NULL on failure). */
napi_value make_buffer(napi_env env, const char *data, size_t len);
/* The first n arguments of a call; fewer is a TypeError naming the usage. 0, or -1 (thrown). */
int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage);

/* Returns NULL from an N-API callback when a call fails (its exception stays pending). */
#define CHECK(call)                                  \
  do {                                               \
    if ((call) != napi_ok) return NULL;              \
  } while (0)
/* A Buffer / Uint8Array argument as a malloc'd NUL-terminated string (throws and returns NULL on error). */
char *arg_bytes(napi_env env, napi_value v, size_t *len_out);

#define VERITY_BLOCK 4096
#define VERITY_MAX_LEVELS 10 /* 64^10 blocks of 4 KiB: more than any file */
#define VERITY_READ (1u << 20)

typedef int (*sha_init_fn)(void *);
typedef int (*sha_update_fn)(void *, const void *, size_t);
typedef int (*sha_final_fn)(unsigned char *, void *);

typedef struct {
  sha_init_fn init;
  sha_update_fn update;
  sha_final_fn final;
  size_t dsize;
  int num; /* fs-verity algorithm number */
} sha_impl;

/* Index 1 = SHA-256, 2 = SHA-512 (the fs-verity numbers); valid once sha_load() returned 1. */
extern sha_impl sha_impls[3];
int sha_load(void);

typedef struct {
  unsigned char block[VERITY_BLOCK];
  size_t used;
  uint64_t count;
} verity_level;

typedef struct {
  const sha_impl *h;
  verity_level levels[VERITY_MAX_LEVELS];
  int nlevels;
  unsigned char pending[VERITY_BLOCK];
  size_t pending_len;
  uint64_t size;
} verity_state;

void verity_init(verity_state *s, const sha_impl *h);
void verity_update(verity_state *s, const unsigned char *data, size_t len);
void verity_final(verity_state *s, unsigned char *out);
/* This thread's hashing state and 1 MiB read buffer (allocated once per thread); -1: no memory. */
int verity_scratch(verity_state **s, unsigned char **buf);
/*
 * fs-verity digest of a file's content read from fd: with offset < 0 from the current position,
 * at most size + 1 bytes (enough to notice growth, never unbounded); else exactly the size bytes
 * at offset (pread). Returns the bytes read (the digest is written only when that equals size),
 * or -1 with errno set.
 */
int64_t verity_fd(int fd, const sha_impl *h, uint64_t size, int64_t offset, unsigned char *digest);

/*
 * SHA-256 of two 4096-byte messages at once (sha256x2.c); only once sha256x2_ready() returned 1
 * (the CPU has the SHA extensions and the code agreed with OpenSSL on test blocks; the
 * environment variable CFS_NO_SHA_X2 turns it off).
 */
int sha256x2_ready(void);
void sha256x2_4k(const unsigned char *a, const unsigned char *b, unsigned char *da, unsigned char *db);

/* Lowers the calling (libuv) thread's scheduling priority, once per thread. */
void lower_thread_priority(void);

/* The functions module.c exports to JS: scan.c, xattrs.c, verity.c. */
napi_value js_scan_dir(napi_env env, napi_callback_info info);
napi_value js_read_xattrs(napi_env env, napi_callback_info info);
napi_value js_hash_available(napi_env env, napi_callback_info info);
napi_value js_sha256_blocks(napi_env env, napi_callback_info info);
napi_value js_verity_buffer(napi_env env, napi_callback_info info);
napi_value js_verity_file_async(napi_env env, napi_callback_info info);
napi_value js_verity_new(napi_env env, napi_callback_info info);
napi_value js_verity_update(napi_env env, napi_callback_info info);
napi_value js_verity_digest(napi_env env, napi_callback_info info);

#endif

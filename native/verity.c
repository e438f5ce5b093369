/*
 * fs-verity digests with the SHA functions of the OpenSSL inside node: in one call, from a file
 * on the libuv thread pool, or incrementally (see the section comment below).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <node_api.h>

#include "cfs.h"

/* ------------------------------------------------------------------------------------------ */
/* fs-verity hashing with the OpenSSL that the Node binary itself carries.                      */
/*                                                                                              */
/* The SHA functions are looked up at load time with dlsym (never linked): if the running node  */
/* does not export them, hashAvailable() is false and JS falls back to node:crypto, while the   */
/* xattr functions keep working. The low-level SHA*_Init/Update/Final run the assembly block    */
/* functions directly, without EVP's per-call lookup.                                           */


/* Index 1 = SHA-256, 2 = SHA-512 (the fs-verity numbers). */
sha_impl sha_impls[3];
static int sha_ready = 0;
static pthread_once_t sha_once_flag = PTHREAD_ONCE_INIT;

static void sha_load_once(void) {
  sha_impls[1].init = (sha_init_fn)dlsym(RTLD_DEFAULT, "SHA256_Init");
  sha_impls[1].update = (sha_update_fn)dlsym(RTLD_DEFAULT, "SHA256_Update");
  sha_impls[1].final = (sha_final_fn)dlsym(RTLD_DEFAULT, "SHA256_Final");
  sha_impls[1].dsize = 32;
  sha_impls[1].num = 1;
  sha_impls[2].init = (sha_init_fn)dlsym(RTLD_DEFAULT, "SHA512_Init");
  sha_impls[2].update = (sha_update_fn)dlsym(RTLD_DEFAULT, "SHA512_Update");
  sha_impls[2].final = (sha_final_fn)dlsym(RTLD_DEFAULT, "SHA512_Final");
  sha_impls[2].dsize = 64;
  sha_impls[2].num = 2;
  int ok = 1;
  for (int i = 1; i <= 2; i++)
    if (!sha_impls[i].init || !sha_impls[i].update || !sha_impls[i].final) ok = 0;
  if (ok) {
    /* Self-test: SHA-256("abc") must match, so that a same-named but different symbol is never used. */
    static const unsigned char want[4] = {0xba, 0x78, 0x16, 0xbf};
    unsigned char out[64];
    _Alignas(16) unsigned char ctx[512];
    if (sha_impls[1].init(ctx) != 1 || sha_impls[1].update(ctx, "abc", 3) != 1 || sha_impls[1].final(out, ctx) != 1 ||
        memcmp(out, want, 4) != 0)
      ok = 0;
  }
  sha_ready = ok;
}

int sha_load(void) {
  pthread_once(&sha_once_flag, sha_load_once);
  return sha_ready;
}

/* One hash of len bytes. The context buffer is larger than SHA512_CTX (216 bytes) in every OpenSSL. */
static void sha_once(const sha_impl *h, const unsigned char *data, size_t len, unsigned char *out) {
  _Alignas(16) unsigned char ctx[512];
  h->init(ctx);
  h->update(ctx, data, len);
  h->final(out, ctx);
}

static void verity_add(verity_state *s, int i, const unsigned char *hash) {
  if (i >= VERITY_MAX_LEVELS) abort(); /* unreachable: see VERITY_MAX_LEVELS */
  if (i >= s->nlevels) {
    s->levels[i].used = 0;
    s->levels[i].count = 0;
    s->nlevels = i + 1;
  }
  verity_level *l = &s->levels[i];
  memcpy(l->block + l->used, hash, s->h->dsize);
  l->used += s->h->dsize;
  l->count++;
  if (l->used == VERITY_BLOCK) {
    unsigned char up[64];
    sha_once(s->h, l->block, VERITY_BLOCK, up);
    l->used = 0;
    verity_add(s, i + 1, up);
  }
}

void verity_init(verity_state *s, const sha_impl *h) {
  s->h = h;
  s->nlevels = 0;
  s->pending_len = 0;
  s->size = 0;
}

void verity_update(verity_state *s, const unsigned char *data, size_t len) {
  unsigned char d[64];
  s->size += len;
  if (s->pending_len > 0) {
    size_t take = VERITY_BLOCK - s->pending_len;
    if (take > len) take = len;
    memcpy(s->pending + s->pending_len, data, take);
    s->pending_len += take;
    data += take;
    len -= take;
    if (s->pending_len == VERITY_BLOCK) {
      sha_once(s->h, s->pending, VERITY_BLOCK, d);
      verity_add(s, 0, d);
      s->pending_len = 0;
    }
  }
  if (s->h->num == 1 && len >= 2 * VERITY_BLOCK && sha256x2_ready()) {
    /* Data blocks two at a time (independent hashes; the tree gets them in order). */
    unsigned char d2[32];
    do {
      sha256x2_4k(data, data + VERITY_BLOCK, d, d2);
      verity_add(s, 0, d);
      verity_add(s, 0, d2);
      data += 2 * VERITY_BLOCK;
      len -= 2 * VERITY_BLOCK;
    } while (len >= 2 * VERITY_BLOCK);
  }
  while (len >= VERITY_BLOCK) {
    sha_once(s->h, data, VERITY_BLOCK, d);
    verity_add(s, 0, d);
    data += VERITY_BLOCK;
    len -= VERITY_BLOCK;
  }
  if (len > 0) {
    memcpy(s->pending + s->pending_len, data, len);
    s->pending_len += len;
  }
}

void verity_final(verity_state *s, unsigned char *out) {
  unsigned char root[64];
  unsigned char d[64];
  size_t ds = s->h->dsize;
  if (s->pending_len > 0) {
    memset(s->pending + s->pending_len, 0, VERITY_BLOCK - s->pending_len);
    sha_once(s->h, s->pending, VERITY_BLOCK, d);
    verity_add(s, 0, d);
    s->pending_len = 0;
  }
  memset(root, 0, sizeof root);
  for (int i = 0; i < s->nlevels; i++) {
    verity_level *l = &s->levels[i];
    if (i == s->nlevels - 1 && l->count == 1) {
      memcpy(root, l->block, ds);
      break;
    }
    if (l->used > 0) {
      memset(l->block + l->used, 0, VERITY_BLOCK - l->used);
      sha_once(s->h, l->block, VERITY_BLOCK, d);
      l->used = 0;
      verity_add(s, i + 1, d);
    }
  }
  unsigned char desc[256];
  memset(desc, 0, sizeof desc);
  desc[0] = 1;
  desc[1] = (unsigned char)s->h->num;
  desc[2] = 12;
  for (int b = 0; b < 8; b++) desc[8 + b] = (unsigned char)(s->size >> (8 * b));
  memcpy(desc + 16, root, ds);
  sha_once(s->h, desc, sizeof desc, out);
}

/*
 * Hashing on libuv's threads competes for the cores with the JS thread, which parses tar
 * headers (or builds the tree) and feeds them: when it falls behind, every core idles. A thread
 * that hashes therefore lowers its own scheduling priority once (nice + 5, Linux per-thread),
 * so the JS thread runs whenever it has work and the hashes take the remaining time.
 */
static _Thread_local int tl_niced;
void lower_thread_priority(void) {
  if (tl_niced) return;
  tl_niced = 1;
  pid_t tid = (pid_t)syscall(SYS_gettid);
  errno = 0;
  int cur = getpriority(PRIO_PROCESS, (id_t)tid);
  if (errno == 0 && cur < 19) setpriority(PRIO_PROCESS, (id_t)tid, cur + 5 > 19 ? 19 : cur + 5);
}

/* Per-thread scratch (hash workers call this synchronously on their own threads). */
static _Thread_local verity_state *tl_state;
static _Thread_local unsigned char *tl_buf;

int verity_scratch(verity_state **s, unsigned char **buf) {
  if (!tl_state) tl_state = malloc(sizeof *tl_state);
  if (!tl_buf) tl_buf = malloc(VERITY_READ);
  if (!tl_state || !tl_buf) return -1;
  *s = tl_state;
  *buf = tl_buf;
  return 0;
}

int64_t verity_fd(int fd, const sha_impl *h, uint64_t size, int64_t offset, unsigned char *digest) {
  verity_state *s;
  unsigned char *buf;
  if (verity_scratch(&s, &buf) < 0) {
    errno = ENOMEM;
    return -1;
  }
  verity_init(s, h);
  uint64_t total = 0;
  for (;;) {
    uint64_t room = size - total + (offset < 0 ? 1 : 0);
    if (room == 0) break;
    size_t want = room < VERITY_READ ? (size_t)room : VERITY_READ;
    ssize_t got = offset < 0 ? read(fd, buf, want) : pread(fd, buf, want, (off_t)(offset + (int64_t)total));
    if (got < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (got == 0) break;
    total += (uint64_t)got;
    if (total > size) break;
    verity_update(s, buf, (size_t)got);
    /* A read of a regular file that returns less than asked for (here: one byte more than the
       size the scan saw) has met the end of the file: the read that would return 0 is saved
       (one syscall per file). Only taken when the size is exactly what was expected; anything
       else reads on, and a file that grew or shrank is still reported. */
    if (offset < 0 && (size_t)got < want && total == size) break;
  }
  if (total == size) verity_final(s, digest);
  return (int64_t)total;
}

/* verity_fd of the file at path: 0 with *total set, or -1 with *f set. */
static int verity_path(const char *path, size_t path_len, const sha_impl *h, uint64_t size, int64_t offset,
                       unsigned char *digest, uint64_t *total, fail_info *f) {
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    set_fail(f, errno, "open", path, path_len);
    return -1;
  }
  int64_t got = verity_fd(fd, h, size, offset, digest);
  int e = errno;
  close(fd);
  if (got < 0) {
    set_fail(f, e, "read", path, path_len);
    return -1;
  }
  *total = (uint64_t)got;
  return 0;
}

/* A size or offset argument: a non-negative integer exact as a double. */
static int u53_arg(napi_env env, napi_value v, const char *what, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) return -1;
  if (!(*out >= 0 && *out <= 9007199254740991.0)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", what);
    return -1;
  }
  return 0;
}

static const sha_impl *alg_arg(napi_env env, napi_value v) {
  int32_t n = 0;
  if (napi_get_value_int32(env, v, &n) != napi_ok || (n != 1 && n != 2)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "algorithm must be 1 (sha256) or 2 (sha512)");
    return NULL;
  }
  if (!sha_load()) {
    napi_throw_error(env, "ENOTSUP", "native hashing unavailable");
    return NULL;
  }
  return &sha_impls[n];
}

static int u8_arg(napi_env env, napi_value v, unsigned char **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a Uint8Array");
    return -1;
  }
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  void *p;
  if (napi_get_typedarray_info(env, v, &t, len, &p, &ab, &off) != napi_ok) return -1;
  if (t != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a Uint8Array");
    return -1;
  }
  *data = p;
  return 0;
}

/* hashAvailable(): whether the functions below work in this process. */
napi_value js_hash_available(napi_env env, napi_callback_info info) {
  napi_value r;
  CHECK(napi_get_boolean(env, sha_load() == 1, &r));
  return r;
}

/* sha256Blocks(): how SHA-256 data blocks are hashed here: "x2" (sha256x2.c) or "single" (OpenSSL). */
napi_value js_sha256_blocks(napi_env env, napi_callback_info info) {
  napi_value r;
  CHECK(napi_create_string_utf8(env, sha_load() == 1 && sha256x2_ready() ? "x2" : "single", NAPI_AUTO_LENGTH, &r));
  return r;
}

/*
 * verityBuffer(data, alg, out): fs-verity digest of an in-memory buffer, in one call (no
 * incremental handle to create and collect: the cheap path for many small tar members).
 */
napi_value js_verity_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv, "verityBuffer(data, alg, out)")) return NULL;
  const sha_impl *h = alg_arg(env, argv[1]);
  if (!h) return NULL;
  unsigned char *data, *out;
  size_t len, out_len;
  if (u8_arg(env, argv[0], &data, &len) || u8_arg(env, argv[2], &out, &out_len)) return NULL;
  if (out_len < h->dsize) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "verityBuffer: output buffer too small");
    return NULL;
  }
  verity_state *s;
  unsigned char *buf;
  if (verity_scratch(&s, &buf) < 0) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  verity_init(s, h);
  verity_update(s, data, len);
  verity_final(s, out);
  return NULL;
}

/*
 * verityFileAsync(path, alg, size[, offset]): the fs-verity digest of a file, read and hashed on
 * the libuv thread pool, reading at most size + 1 bytes. Resolves to the digest (a Buffer), or
 * to the number of bytes read when that differs from size (the file changed); rejects with an
 * error like readXattrs'. With an offset, the digest is of the size bytes there (a member of a
 * tar file), read with pread.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  size_t path_len;
  const sha_impl *h;
  uint64_t size;
  int64_t offset; /* -1: the whole file (read up to size + 1 bytes); else a range of exactly size bytes */
  uint64_t total;
  unsigned char digest[64];
  fail_info fail;
} verity_job;

static void verity_job_execute(napi_env env, void *data) {
  verity_job *j = data;
  lower_thread_priority();
  verity_path(j->path, j->path_len, j->h, j->size, j->offset, j->digest, &j->total, &j->fail);
}

static void verity_job_complete(napi_env env, napi_status status, void *data) {
  verity_job *j = data;
  napi_value result = NULL;
  if (status == napi_ok && j->fail.err == 0) {
    if (j->total == j->size) result = make_buffer(env, (const char *)j->digest, j->h->dsize);
    else napi_create_double(env, (double)j->total, &result);
  }
  if (result) napi_resolve_deferred(env, j->deferred, result);
  else {
    if (j->fail.err == 0) {
      napi_value pending;
      napi_get_and_clear_last_exception(env, &pending);
      j->fail.err = status == napi_cancelled ? ECANCELED : ENOMEM;
      j->fail.syscall = "verityFileAsync";
    }
    napi_value err = make_error(env, &j->fail);
    if (!err) {
      napi_value msg;
      napi_create_string_utf8(env, "verityFileAsync failed", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &err);
    }
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  free(j->path);
  free(j->fail.path);
  free(j);
}

napi_value js_verity_file_async(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "verityFileAsync(path, alg, size[, offset])");
    return NULL;
  }
  double offset_d = -1;
  if (argc >= 4) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[3], &t));
    if (t != napi_undefined && u53_arg(env, argv[3], "verityFileAsync: bad offset", &offset_d)) return NULL;
  }
  const sha_impl *h = alg_arg(env, argv[1]);
  if (!h) return NULL;
  double size_d;
  if (u53_arg(env, argv[2], "verityFileAsync: bad size", &size_d)) return NULL;
  verity_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->path = arg_bytes(env, argv[0], &j->path_len);
  if (!j->path) {
    free(j);
    return NULL;
  }
  j->h = h;
  j->size = (uint64_t)size_d;
  j->offset = (int64_t)offset_d;
  napi_value promise, resource_name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "cfsVerityFile", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, verity_job_execute, verity_job_complete, j, &j->work) != napi_ok) {
    free(j->path);
    free(j);
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    free(j->path);
    free(j);
    return NULL;
  }
  return promise;
}

/*
 * Incremental form, for data that arrives in pieces (tar members):
 *   verityNew(alg) -> handle;  verityUpdate(handle, data);  verityDigest(handle, out)
 * The state is freed by verityDigest (or by the garbage collector if abandoned).
 */
typedef struct {
  verity_state *s;
} verity_handle;

static void verity_handle_finalize(napi_env env, void *data, void *hint) {
  verity_handle *h = data;
  free(h->s);
  free(h);
}

napi_value js_verity_new(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv, "verityNew(alg)")) return NULL;
  const sha_impl *impl = alg_arg(env, argv[0]);
  if (!impl) return NULL;
  verity_handle *h = malloc(sizeof *h);
  verity_state *st = malloc(sizeof *st);
  if (!h || !st) {
    free(h);
    free(st);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  verity_init(st, impl);
  h->s = st;
  napi_value ext;
  if (napi_create_external(env, h, verity_handle_finalize, NULL, &ext) != napi_ok) {
    free(st);
    free(h);
    return NULL;
  }
  return ext;
}

static verity_handle *handle_arg(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a verityNew handle");
    return NULL;
  }
  verity_handle *h = p;
  if (!h->s) {
    napi_throw_error(env, "ERR_INVALID_STATE", "fs-verity hasher already finished");
    return NULL;
  }
  return h;
}

napi_value js_verity_update(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv, "verityUpdate(handle, data)")) return NULL;
  verity_handle *h = handle_arg(env, argv[0]);
  if (!h) return NULL;
  unsigned char *data;
  size_t len;
  if (u8_arg(env, argv[1], &data, &len)) return NULL;
  verity_update(h->s, data, len);
  return NULL;
}

napi_value js_verity_digest(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv, "verityDigest(handle, out)")) return NULL;
  verity_handle *h = handle_arg(env, argv[0]);
  if (!h) return NULL;
  unsigned char *out;
  size_t len;
  if (u8_arg(env, argv[1], &out, &len)) return NULL;
  if (len < h->s->h->dsize) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "verityDigest: output buffer too small");
    return NULL;
  }
  verity_final(h->s, out);
  free(h->s);
  h->s = NULL;
  return NULL;
}

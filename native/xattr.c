/*
 * composefs-ts native helper: read extended attributes without following symlinks.
 *
 * Node has no xattr API. This addon exposes exactly two functions:
 *
 *   readXattrs(path: Buffer): Array<[name: Buffer, value: Buffer]>
 *       Synchronous; llistxattr + lgetxattr of one path.
 *
 *   readXattrsBatch(dir: Buffer, names: Buffer[]): Promise<Array<Array<[Buffer, Buffer]>>>
 *       Asynchronous (runs on the libuv thread pool): the xattrs of dir + "/" + name for every
 *       name, in the order given. One call per directory keeps the JS<->C crossings cheap.
 *
 * Paths are raw bytes (no encoding assumptions); names and values come back as Buffers in the
 * order the kernel lists them. Failures raise/reject an Error with .code ("ENOENT", ...),
 * .errno (negative, like Node's own errors), .syscall, .path (string) and .pathBuffer (raw).
 *
 * Sizes are queried first and the call retried on ERANGE, so any list/value the kernel accepts
 * (at most 64 KiB each on Linux) is read in full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/xattr.h>

#include <node_api.h>
#include <uv.h>

/* ------------------------------------------------------------------------------------------ */
/* Plain C part: no N-API calls, safe on worker threads.                                        */

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

static void free_list(xattr_list *l) {
  if (!l->pairs) return;
  for (size_t i = 0; i < l->count; i++) {
    free(l->pairs[i].name);
    free(l->pairs[i].value);
  }
  free(l->pairs);
  l->pairs = NULL;
  l->count = 0;
}

static void set_fail(fail_info *f, int err, const char *syscall, const char *path, size_t path_len) {
  f->err = err;
  f->syscall = syscall;
  f->path = malloc(path_len + 1);
  if (f->path) {
    memcpy(f->path, path, path_len);
    f->path[path_len] = 0;
    f->path_len = path_len;
  } else {
    f->path_len = 0;
  }
}

/* Reads all xattrs of `path` (NUL-terminated, length path_len). Returns 0 or -1 with *f set. */
static int read_xattrs_c(const char *path, size_t path_len, xattr_list *out, fail_info *f) {
  out->pairs = NULL;
  out->count = 0;
  char *names = NULL;
  ssize_t list_len;
  for (;;) {
    list_len = llistxattr(path, NULL, 0);
    if (list_len < 0) {
      set_fail(f, errno, "llistxattr", path, path_len);
      return -1;
    }
    if (list_len == 0) return 0;
    names = malloc((size_t)list_len);
    if (!names) {
      set_fail(f, ENOMEM, "llistxattr", path, path_len);
      return -1;
    }
    ssize_t got = llistxattr(path, names, (size_t)list_len);
    if (got >= 0) {
      list_len = got;
      break;
    }
    int e = errno;
    free(names);
    names = NULL;
    if (e != ERANGE) {
      set_fail(f, e, "llistxattr", path, path_len);
      return -1;
    }
    /* The list grew between the two calls: ask again. */
  }

  size_t n = 0;
  for (ssize_t i = 0; i < list_len; i++)
    if (names[i] == 0) n++;
  out->pairs = calloc(n ? n : 1, sizeof(xattr_pair));
  if (!out->pairs) {
    free(names);
    set_fail(f, ENOMEM, "llistxattr", path, path_len);
    return -1;
  }

  size_t off = 0;
  while (off < (size_t)list_len) {
    const char *name = names + off;
    size_t nlen = strnlen(name, (size_t)list_len - off);
    off += nlen + 1;
    if (nlen == 0) continue;
    char *value = NULL;
    ssize_t vlen;
    for (;;) {
      vlen = lgetxattr(path, name, NULL, 0);
      if (vlen < 0) break;
      value = malloc(vlen ? (size_t)vlen : 1);
      if (!value) {
        errno = ENOMEM;
        vlen = -1;
        break;
      }
      ssize_t got = lgetxattr(path, name, value, (size_t)vlen);
      if (got >= 0) {
        vlen = got;
        break;
      }
      int e = errno;
      free(value);
      value = NULL;
      if (e != ERANGE) {
        errno = e;
        vlen = -1;
        break;
      }
    }
    if (vlen < 0) {
      int e = errno;
      free(names);
      free_list(out);
      set_fail(f, e, "lgetxattr", path, path_len);
      return -1;
    }
    xattr_pair *p = &out->pairs[out->count++];
    p->name = malloc(nlen + 1);
    if (!p->name) {
      free(value);
      out->count--;
      free(names);
      free_list(out);
      set_fail(f, ENOMEM, "lgetxattr", path, path_len);
      return -1;
    }
    memcpy(p->name, name, nlen + 1);
    p->name_len = nlen;
    p->value = value;
    p->value_len = (size_t)vlen;
  }
  free(names);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* N-API helpers.                                                                                */

#define CHECK(call)                                  \
  do {                                               \
    if ((call) != napi_ok) return NULL;              \
  } while (0)

static napi_value make_buffer(napi_env env, const char *data, size_t len) {
  napi_value buf;
  void *dst;
  if (napi_create_buffer_copy(env, len, len ? data : "", &dst, &buf) != napi_ok) return NULL;
  return buf;
}

static napi_value list_to_js(napi_env env, const xattr_list *l) {
  napi_value arr;
  CHECK(napi_create_array_with_length(env, l->count, &arr));
  for (size_t i = 0; i < l->count; i++) {
    napi_value pair, name, value;
    CHECK(napi_create_array_with_length(env, 2, &pair));
    name = make_buffer(env, l->pairs[i].name, l->pairs[i].name_len);
    value = make_buffer(env, l->pairs[i].value, l->pairs[i].value_len);
    if (!name || !value) return NULL;
    CHECK(napi_set_element(env, pair, 0, name));
    CHECK(napi_set_element(env, pair, 1, value));
    CHECK(napi_set_element(env, arr, (uint32_t)i, pair));
  }
  return arr;
}

static napi_value make_error(napi_env env, const fail_info *f) {
  const char *code = uv_err_name(-f->err);
  const char *desc = strerror(f->err);
  const char *p = f->path ? f->path : "";
  size_t msg_len = strlen(code) + strlen(desc) + strlen(f->syscall) + f->path_len + 32;
  char *msg = malloc(msg_len);
  if (!msg) return NULL;
  snprintf(msg, msg_len, "%s: %s, %s '%s'", code, desc, f->syscall, p);
  napi_value jcode, jmsg, err, jerrno, jsys, jpath, jpathbuf;
  napi_status s = napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  if (s == napi_ok) s = napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  free(msg);
  if (s != napi_ok) return NULL;
  CHECK(napi_create_error(env, jcode, jmsg, &err));
  CHECK(napi_create_int32(env, -f->err, &jerrno));
  CHECK(napi_create_string_utf8(env, f->syscall, NAPI_AUTO_LENGTH, &jsys));
  CHECK(napi_create_string_utf8(env, p, f->path_len, &jpath));
  jpathbuf = make_buffer(env, p, f->path_len);
  if (!jpathbuf) return NULL;
  CHECK(napi_set_named_property(env, err, "errno", jerrno));
  CHECK(napi_set_named_property(env, err, "syscall", jsys));
  CHECK(napi_set_named_property(env, err, "path", jpath));
  CHECK(napi_set_named_property(env, err, "pathBuffer", jpathbuf));
  return err;
}

/* Copies a Buffer / Uint8Array argument into a malloc'd NUL-terminated string. */
static char *arg_bytes(napi_env env, napi_value v, size_t *len_out) {
  bool is_buf = false;
  void *data = NULL;
  size_t len = 0;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok) return NULL;
  if (is_buf) {
    if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return NULL;
  } else {
    bool is_ta = false;
    if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path arguments must be Buffers");
      return NULL;
    }
    napi_typedarray_type t;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok) return NULL;
    if (t != napi_uint8_array) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path arguments must be Buffers");
      return NULL;
    }
  }
  if (memchr(data, 0, len)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "paths must not contain NUL bytes");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (len) memcpy(s, data, len);
  s[len] = 0;
  *len_out = len;
  return s;
}

/* ------------------------------------------------------------------------------------------ */
/* readXattrs(path)                                                                              */

static napi_value js_read_xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "readXattrs(path: Buffer)");
    return NULL;
  }
  size_t len;
  char *path = arg_bytes(env, argv[0], &len);
  if (!path) return NULL;
  xattr_list l;
  fail_info f = {0};
  int rc = read_xattrs_c(path, len, &l, &f);
  free(path);
  if (rc < 0) {
    napi_value err = make_error(env, &f);
    free(f.path);
    if (err) napi_throw(env, err);
    return NULL;
  }
  napi_value res = list_to_js(env, &l);
  free_list(&l);
  return res;
}

/* ------------------------------------------------------------------------------------------ */
/* readXattrsBatch(dir, names)                                                                   */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  size_t n;
  char **paths;      /* full paths dir + "/" + name */
  size_t *path_lens;
  xattr_list *results;
  fail_info fail;
} batch_job;

static void batch_free(batch_job *j) {
  if (j->paths) {
    for (size_t i = 0; i < j->n; i++) free(j->paths[i]);
    free(j->paths);
  }
  free(j->path_lens);
  if (j->results) {
    for (size_t i = 0; i < j->n; i++) free_list(&j->results[i]);
    free(j->results);
  }
  free(j->fail.path);
  free(j);
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  batch_job *j = data;
  for (size_t i = 0; i < j->n; i++) {
    if (read_xattrs_c(j->paths[i], j->path_lens[i], &j->results[i], &j->fail) < 0) return;
  }
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  batch_job *j = data;
  napi_value result = NULL;
  if (status == napi_ok && j->fail.err == 0) {
    napi_value arr;
    if (napi_create_array_with_length(env, j->n, &arr) == napi_ok) {
      result = arr;
      for (size_t i = 0; i < j->n; i++) {
        napi_value one = list_to_js(env, &j->results[i]);
        if (!one || napi_set_element(env, arr, (uint32_t)i, one) != napi_ok) {
          result = NULL;
          break;
        }
      }
    }
    if (result) {
      napi_resolve_deferred(env, j->deferred, result);
    } else {
      napi_value pending, err = NULL, msg;
      napi_get_and_clear_last_exception(env, &pending); /* e.g. out of memory while building */
      napi_create_string_utf8(env, "readXattrsBatch: failed to build the result", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &err);
      napi_reject_deferred(env, j->deferred, err);
    }
  } else {
    napi_value err = NULL;
    if (j->fail.err == 0) {
      j->fail.err = ECANCELED;
      j->fail.syscall = "readXattrsBatch";
    }
    err = make_error(env, &j->fail);
    if (!err) {
      napi_value msg;
      napi_create_string_utf8(env, "readXattrsBatch failed", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &err);
    }
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  batch_free(j);
}

static napi_value js_read_xattrs_batch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_arr = false;
  if (argc < 2 || napi_is_array(env, argv[1], &is_arr) != napi_ok || !is_arr) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "readXattrsBatch(dir: Buffer, names: Buffer[])");
    return NULL;
  }
  size_t dir_len;
  char *dir = arg_bytes(env, argv[0], &dir_len);
  if (!dir) return NULL;
  uint32_t n;
  if (napi_get_array_length(env, argv[1], &n) != napi_ok) {
    free(dir);
    return NULL;
  }
  batch_job *j = calloc(1, sizeof(batch_job));
  if (j) {
    j->n = n;
    j->paths = calloc(n ? n : 1, sizeof(char *));
    j->path_lens = calloc(n ? n : 1, sizeof(size_t));
    j->results = calloc(n ? n : 1, sizeof(xattr_list));
  }
  if (!j || !j->paths || !j->path_lens || !j->results) {
    free(dir);
    if (j) batch_free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  /* "/" needs no separator of its own. */
  int need_sep = !(dir_len > 0 && dir[dir_len - 1] == '/');
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    size_t nlen;
    char *name;
    if (napi_get_element(env, argv[1], i, &el) != napi_ok || !(name = arg_bytes(env, el, &nlen))) {
      free(dir);
      batch_free(j);
      return NULL;
    }
    size_t plen = dir_len + (size_t)need_sep + nlen;
    char *p = malloc(plen + 1);
    if (!p) {
      free(name);
      free(dir);
      batch_free(j);
      napi_throw_error(env, "ENOMEM", "out of memory");
      return NULL;
    }
    memcpy(p, dir, dir_len);
    if (need_sep) p[dir_len] = '/';
    memcpy(p + dir_len + need_sep, name, nlen);
    p[plen] = 0;
    free(name);
    j->paths[i] = p;
    j->path_lens[i] = plen;
  }
  free(dir);

  napi_value promise, resource_name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "cfsReadXattrsBatch", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, batch_execute, batch_complete, j, &j->work) != napi_ok) {
    batch_free(j);
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    batch_free(j);
    return NULL;
  }
  return promise;
}

/* ------------------------------------------------------------------------------------------ */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readXattrs", NULL, js_read_xattrs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readXattrsBatch", NULL, js_read_xattrs_batch, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

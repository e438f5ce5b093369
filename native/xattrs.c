/*
 * Extended attributes: all xattrs of one path or open file (read_xattrs_c, also used by scan.c)
 * and readXattrs(path) for JS.
 *
 * xattr sizes are queried first and the call retried on ERANGE, so any list/value the kernel
 * accepts (at most 64 KiB each on Linux) is read in full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <node_api.h>

/* ------------------------------------------------------------------------------------------ */
/* Plain C part: no N-API calls, safe on worker threads.                                        */

#include "cfs.h"

void free_list(xattr_list *l) {
  if (!l->pairs) return;
  for (size_t i = 0; i < l->count; i++) {
    free(l->pairs[i].name);
    free(l->pairs[i].value);
  }
  free(l->pairs);
  l->pairs = NULL;
  l->count = 0;
}

void set_fail(fail_info *f, int err, const char *syscall, const char *path, size_t path_len) {
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
int read_xattrs_c(const char *path, size_t path_len, int fd, xattr_list *out, fail_info *f) {
  out->pairs = NULL;
  out->count = 0;
  char *names = NULL;
  ssize_t list_len;
  for (;;) {
    list_len = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(path, NULL, 0);
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
    ssize_t got = fd >= 0 ? flistxattr(fd, names, (size_t)list_len) : llistxattr(path, names, (size_t)list_len);
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
      vlen = fd >= 0 ? fgetxattr(fd, name, NULL, 0) : lgetxattr(path, name, NULL, 0);
      if (vlen < 0) break;
      value = malloc(vlen ? (size_t)vlen : 1);
      if (!value) {
        errno = ENOMEM;
        vlen = -1;
        break;
      }
      ssize_t got = fd >= 0 ? fgetxattr(fd, name, value, (size_t)vlen) : lgetxattr(path, name, value, (size_t)vlen);
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

/* ------------------------------------------------------------------------------------------ */
/* readXattrs(path)                                                                              */

napi_value js_read_xattrs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv, "readXattrs(path: Buffer)")) return NULL;
  size_t len;
  char *path = arg_bytes(env, argv[0], &len);
  if (!path) return NULL;
  xattr_list l;
  fail_info f = {0};
  int rc = read_xattrs_c(path, len, -1, &l, &f);
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

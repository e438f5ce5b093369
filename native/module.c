/*
 * composefs-ts native addon (cfs_native.node: build/Release/ when built from source,
 * prebuilds/linux-x64/cfs_native.napi.node in the npm package). Node has no xattr API, and its
 * own file reads cost a thread-pool round trip per call; this addon exposes:
 *
 *   readXattrs(path: Buffer): Array<[name: Buffer, value: Buffer]>            (xattrs.c)
 *       Synchronous; llistxattr + lgetxattr of one path.
 *   scanDir(dir, alg, hashMax): Promise<Buffer>            (scan.c)
 *       One directory read whole on the libuv thread pool: stats, small contents, symlink
 *       targets, xattrs and digests of small files, as packed records.
 *   hashAvailable(), sha256Blocks(), verityFileAsync(path, alg, size[, offset]),
 *   verityBuffer(data, alg, out), verityNew(alg) / verityUpdate(h, data) / verityDigest(h, out)
 *                                                                              (verity.c)
 *       fs-verity digests computed with the SHA functions of the OpenSSL inside node; SHA-256
 *       data blocks two at a time with the CPU's SHA extensions where it has them (sha256x2.c).
 *
 * Paths are raw bytes (no encoding assumptions); xattr names and values come back as Buffers in
 * the order the kernel lists them. Failures raise/reject an Error with .code ("ENOENT", ...),
 * .errno (negative, like Node's own errors), .syscall, .path (string) and .pathBuffer (raw).
 *
 * Only Node-API (NAPI_VERSION 8, binding.gyp) and libuv's uv_err_name are used, both stable
 * across Node versions, so one build serves every Node >= 20 of its platform and libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>
#include <uv.h>

#include "cfs.h"

/* ------------------------------------------------------------------------------------------ */
/* N-API helpers.                                                                                */

napi_value make_buffer(napi_env env, const char *data, size_t len) {
  napi_value buf;
  void *dst;
  if (napi_create_buffer_copy(env, len, len ? data : "", &dst, &buf) != napi_ok) return NULL;
  return buf;
}

napi_value make_error(napi_env env, const fail_info *f) {
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
char *arg_bytes(napi_env env, napi_value v, size_t *len_out) {
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

/* The first n arguments of a call; fewer is a TypeError naming the usage. 0, or -1 (thrown). */
int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < n) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", usage);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readXattrs", NULL, js_read_xattrs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashAvailable", NULL, js_hash_available, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sha256Blocks", NULL, js_sha256_blocks, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verityBuffer", NULL, js_verity_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verityFileAsync", NULL, js_verity_file_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verityNew", NULL, js_verity_new, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verityUpdate", NULL, js_verity_update, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verityDigest", NULL, js_verity_digest, NULL, NULL, NULL, napi_enumerable, NULL},
      {"scanDir", NULL, js_scan_dir, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

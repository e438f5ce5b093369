{
  "targets": [
    {
      "target_name": "cfs_native",
      "sources": ["native/module.c", "native/xattrs.c", "native/verity.c", "native/scan.c", "native/sha256x2.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}

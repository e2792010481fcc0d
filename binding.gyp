{
  "targets": [
    {
      "target_name": "linen_io",
      "sources": ["native/linen_io.c", "native/linen_route.c", "native/linen_wg.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}

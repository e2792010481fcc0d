// Kernel routes over rtnetlink (linen_route.c): routeBatch and routeDump on the addon's exports.
// The two files of the addon share its errors.
#ifndef LINEN_ROUTE_H
#define LINEN_ROUTE_H
#include <node_api.h>

void linen_route_register(napi_env env, napi_value exports);

// From linen_io.c: Error("<call>: <strerror> (<ENAME>)") with .code, .errno and .syscall.
napi_value linen_errno_error(napi_env env, const char *call, int err);

#endif

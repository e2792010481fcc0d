// Kernel routes over rtnetlink (linen_route.c): routeBatch and routeDump on the addon's exports.
#ifndef LINEN_ROUTE_H
#define LINEN_ROUTE_H
#include <node_api.h>

void linen_route_register(napi_env env, napi_value exports);

#endif

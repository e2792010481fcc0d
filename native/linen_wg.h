// WireGuard's batch cryptography (linen_wg.c): adds its functions to the addon's exports.
#ifndef LINEN_WG_H
#define LINEN_WG_H
#include <node_api.h>
void linen_wg_register(napi_env env, napi_value exports);
#endif

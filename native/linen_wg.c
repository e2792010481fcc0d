// WireGuard's cryptography that Node's crypto API lacks, through the libcrypto (OpenSSL 3) that
// the running Node carries: its symbols are resolved at load time from the node binary (static
// OpenSSL) or from the libcrypto.so.3 it links (distribution builds), so the addon links no
// crypto library of its own and the prebuilt addon needs nothing beyond Node.
//
// - wgMac: keyed BLAKE2s with a chosen output length (MAC1 and MAC2 use 16 bytes), OpenSSL's
//   BLAKE2SMAC.
// - wgSealBatch / wgOpenBatch: ChaCha20-Poly1305 with WireGuard's nonce (32 zero bits, then the
//   64-bit little-endian counter) and no associated data, on a whole table of messages in one
//   call, in place. The addon knows byte ranges and keys, never message formats: the caller (the
//   wasm core) says where each payload, its key and its counter are.
#include <node_api.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "linen_wg.h"

#define WG_KEY_LEN 32
#define WG_MAC_MAX 32

// WG_ENTRY_SIZE, WG_E_*: the crypt table entry, in the layout generated from the wasm core.
#include "linen_abi.h"

typedef struct {
  EVP_CIPHER *aead;
  EVP_CIPHER_CTX *ctx;
  EVP_MAC *mac;
  // The key and direction ctx holds (keyed = 0: none). A batch's messages mostly share a
  // session's key: setting only the nonce for each skips the provider's full re-initialisation.
  uint8_t key[WG_KEY_LEN];
  int keyed;
  int seal;
} wg_state;

static void wg_state_free(void *arg) {
  wg_state *s = arg;
  OPENSSL_cleanse(s->key, sizeof s->key);
  EVP_CIPHER_CTX_free(s->ctx);
  EVP_CIPHER_free(s->aead);
  EVP_MAC_free(s->mac);
  free(s);
}

static napi_value wg_throw(napi_env env, const char *msg) {
  napi_throw_error(env, "ERR_LINEN_CRYPTO", msg);
  return NULL;
}

// Fetched once per env (each worker thread has its own), freed when the env goes.
static wg_state *wg_get_state(napi_env env) {
  static __thread wg_state *cached_state;
  static __thread napi_env cached_env;
  if (cached_state != NULL && cached_env == env) return cached_state;
  wg_state *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->aead = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  s->ctx = EVP_CIPHER_CTX_new();
  s->mac = EVP_MAC_fetch(NULL, "BLAKE2SMAC", NULL);
  if (s->aead == NULL || s->ctx == NULL || s->mac == NULL) {
    wg_state_free(s);
    return NULL;
  }
  napi_add_env_cleanup_hook(env, wg_state_free, s);
  cached_state = s;
  cached_env = env;
  return s;
}

static int wg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is = false;
  napi_typedarray_type tt;
  void *p = NULL;
  napi_is_typedarray(env, v, &is);
  if (is) napi_get_typedarray_info(env, v, &tt, len, &p, NULL, NULL);
  if (!is || tt != napi_uint8_array) return 0;
  *data = p;
  return 1;
}

// wgMac(key: Uint8Array (1..32 bytes), data: Uint8Array, length: 1..32): Uint8Array
static napi_value wg_mac(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  uint8_t *key, *data;
  size_t key_len, data_len;
  uint32_t out_len = 0;
  if (argc < 3 || !wg_bytes(env, argv[0], &key, &key_len) || !wg_bytes(env, argv[1], &data, &data_len) ||
      napi_get_value_uint32(env, argv[2], &out_len) != napi_ok)
    return wg_throw(env, "wgMac(key: Uint8Array, data: Uint8Array, length: number)");
  if (key_len < 1 || key_len > WG_KEY_LEN || out_len < 1 || out_len > WG_MAC_MAX)
    return wg_throw(env, "wgMac: the key must be 1 to 32 bytes and the length 1 to 32");
  wg_state *s = wg_get_state(env);
  if (s == NULL) return wg_throw(env, "this Node's OpenSSL lacks BLAKE2SMAC or ChaCha20-Poly1305");
  uint8_t out[WG_MAC_MAX];
  size_t size = out_len, written = 0;
  OSSL_PARAM params[2] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_construct_end()};
  EVP_MAC_CTX *c = EVP_MAC_CTX_new(s->mac);
  int ok = c != NULL && EVP_MAC_init(c, key, key_len, params) && EVP_MAC_update(c, data, data_len) &&
           EVP_MAC_final(c, out, &written, sizeof out) && written == out_len;
  EVP_MAC_CTX_free(c);
  if (!ok) return wg_throw(env, "wgMac: BLAKE2SMAC failed");
  napi_value ab, result;
  void *dst;
  napi_create_arraybuffer(env, out_len, &dst, &ab);
  memcpy(dst, out, out_len);
  napi_create_typedarray(env, napi_uint8_array, out_len, ab, 0, &result);
  return result;
}

static int wg_crypt_one(wg_state *s, const uint8_t *key, uint64_t counter, uint8_t *data, uint32_t len, int seal) {
  uint8_t nonce[12] = {0};
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
  int out = 0, fin = 0;
  int same = s->keyed && s->seal == seal && CRYPTO_memcmp(s->key, key, WG_KEY_LEN) == 0;
  // Until this message succeeds, ctx holds no key it can be trusted to reuse.
  s->keyed = 0;
  if (same ? !EVP_CipherInit_ex(s->ctx, NULL, NULL, NULL, nonce, seal)
           : !EVP_CipherInit_ex(s->ctx, s->aead, NULL, key, nonce, seal)) return 0;
  if (!seal && !EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_LEN, data + len)) return 0;
  if (len > 0 && !EVP_CipherUpdate(s->ctx, data, &out, data, (int)len)) return 0;
  if (!EVP_CipherFinal_ex(s->ctx, data + out, &fin)) return 0;
  if (seal && !EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_LEN, data + len)) return 0;
  if (!same) memcpy(s->key, key, WG_KEY_LEN);
  s->keyed = 1;
  s->seal = seal;
  return 1;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }

// (memory: ArrayBuffer | view, table: offset, count): number of entries that succeeded. Every
// range is checked against the memory first; an entry out of bounds or that fails
// authentication gets status 0 and its bytes are not to be used (an opened payload that fails
// is zeroed so that nothing unauthenticated can leak onward by mistake).
static napi_value wg_crypt_batch(napi_env env, napi_callback_info info, int seal) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  void *base = NULL;
  size_t mem_len = 0;
  bool is = false;
  uint32_t table = 0, count = 0;
  if (argc >= 3 && napi_is_arraybuffer(env, argv[0], &is) == napi_ok && is) {
    napi_get_arraybuffer_info(env, argv[0], &base, &mem_len);
  } else if (argc >= 3 && napi_is_typedarray(env, argv[0], &is) == napi_ok && is) {
    napi_typedarray_type tt;
    napi_get_typedarray_info(env, argv[0], &tt, &mem_len, &base, NULL, NULL);
    if (tt != napi_uint8_array) is = false;
  }
  if (!is || napi_get_value_uint32(env, argv[1], &table) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &count) != napi_ok)
    return wg_throw(env, "expected (memory: ArrayBuffer | Uint8Array, table: number, count: number)");
  uint8_t *mem = base;
  if (mem == NULL || (uint64_t)table + (uint64_t)count * WG_ENTRY_SIZE > mem_len)
    return wg_throw(env, "the crypt table lies outside the memory");
  wg_state *s = wg_get_state(env);
  if (s == NULL) return wg_throw(env, "this Node's OpenSSL lacks ChaCha20-Poly1305");
  uint32_t done = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint8_t *e = mem + table + (size_t)i * WG_ENTRY_SIZE;
    uint32_t key = rd32(e + WG_E_KEY), data = rd32(e + WG_E_DATA), len = rd32(e + WG_E_LENGTH);
    uint64_t counter = (uint64_t)rd32(e + WG_E_COUNTER) | (uint64_t)rd32(e + WG_E_COUNTER + 4) << 32;
    int ok = (uint64_t)key + WG_KEY_LEN <= mem_len && (uint64_t)data + len + WG_TAG_LEN <= mem_len &&
             len <= INT32_MAX - WG_TAG_LEN && wg_crypt_one(s, mem + key, counter, mem + data, len, seal);
    if (!ok && !seal && (uint64_t)data + len <= mem_len) memset(mem + data, 0, len);
    wr32(e + WG_E_STATUS, ok ? 1u : 0u);
    done += ok ? 1 : 0;
  }
  napi_value r;
  napi_create_uint32(env, done, &r);
  return r;
}

static napi_value wg_seal_batch(napi_env env, napi_callback_info info) { return wg_crypt_batch(env, info, 1); }
static napi_value wg_open_batch(napi_env env, napi_callback_info info) { return wg_crypt_batch(env, info, 0); }

void linen_wg_register(napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } fns[] = {
      {"wgMac", wg_mac}, {"wgSealBatch", wg_seal_batch}, {"wgOpenBatch", wg_open_batch}
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
}

/*
 * originalDst(fd) -> { address, port } | errno
 *
 * The destination a connection had before iptables REDIRECTed it to the sidecar, read with
 * getsockopt(SOL_IP, SO_ORIGINAL_DST) from the connection's conntrack/NAT entry, the way
 * Envoy's original_dst listener filter does. IPv4 only (IPv6 would be IP6T_SO_ORIGINAL_DST).
 * On failure it returns the errno (ENOENT: the connection was not NATed) instead of throwing:
 * the caller decides what an un-redirected connection means.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <node_api.h>
#include <string.h>
#include <sys/socket.h>

static napi_value original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "originalDst(fd): fd must be a non-negative integer");
    return NULL;
  }
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  memset(&addr, 0, sizeof addr);
  napi_value out;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0 || addr.sin_family != AF_INET) {
    napi_create_int32(env, errno ? errno : EAFNOSUPPORT, &out);
    return out;
  }
  char buf[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof buf) == NULL) {
    napi_create_int32(env, errno, &out);
    return out;
  }
  napi_value address, port;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &address);
  napi_create_uint32(env, ntohs(addr.sin_port), &port);
  napi_set_named_property(env, out, "address", address);
  napi_set_named_property(env, out, "port", port);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "originalDst", NAPI_AUTO_LENGTH, original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "originalDst", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

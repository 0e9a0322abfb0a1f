/* The C boundary: every C API the Swift code calls is declared from here. */
#ifndef CTCPTOP_H
#define CTCPTOP_H

#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <systemd/sd-daemon.h>
#include <zlib.h>
/* libxcrypt (libcrypt-dev): bcrypt for basic auth, through crypt_ra. */
#include <crypt.h>
/* Debian's OpenSSL 3 (libssl-dev): TLS for the listener and the client. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <spawn.h>

#include "../../../bpf/tcptop_maps.h"

/* libbpf's log callback takes a va_list, which Swift cannot receive: this
 * routes libbpf's messages, formatted, to a plain C-string callback. */
typedef void (*tcptop_log_fn)(int level, const char *message);
void tcptop_set_libbpf_logger(tcptop_log_fn fn);

/* Atomic access to words the kernel writes in a shared mapping (the slots
 * of read path storage_array). */
uint32_t tcptop_load_acquire_u32(const uint32_t *word);
void tcptop_store_release_u32(uint32_t *word, uint32_t value);

/* Capabilities of the calling thread (capget/capset have no glibc wrapper;
 * prctl is variadic). Sets are bit masks, bit n = capability n. Each returns
 * 0, or -1 with errno set. */
int tcptop_caps_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
int tcptop_caps_set(uint64_t effective, uint64_t permitted, uint64_t inheritable);
/* The bounding set: 1 when `cap` is in it, 0 when not, -1 past the last. */
int tcptop_capbset_read(int cap);
int tcptop_capbset_drop(int cap);
int tcptop_ambient_clear_all(void);
/* The highest capability number this kernel knows. */
int tcptop_cap_last(void);

/* epoll, eventfd and accept4 for the HTTP listener: Swift's Glibc module
 * declares none of them (and epoll_event is a packed struct). Events are
 * EPOLL* bit masks, the TCPTOP_EPOLL* values below; `fd` is the event's data. */
enum {
	TCPTOP_EPOLLIN = 0x001, TCPTOP_EPOLLOUT = 0x004, TCPTOP_EPOLLERR = 0x008,
	TCPTOP_EPOLLHUP = 0x010, TCPTOP_EPOLLRDHUP = 0x2000,
};
int tcptop_epoll_create(void);                                   /* close-on-exec */
int tcptop_epoll_add(int epfd, int fd, uint32_t events);
int tcptop_epoll_modify(int epfd, int fd, uint32_t events);
int tcptop_epoll_remove(int epfd, int fd);
/* Fills up to `max` (fd, events) pairs; returns their count, or -1 with errno. */
int tcptop_epoll_wait(int epfd, int32_t *fds, uint32_t *events, int max, int timeout_ms);
int tcptop_eventfd(void);                                        /* non-blocking, close-on-exec */
int tcptop_accept(int fd);                     /* accept4: non-blocking, close-on-exec */

/* zlib's deflateInit2 is a macro. */
int tcptop_deflate_init_gzip(z_stream *stream, int level);

/* OpenSSL macros Swift cannot import (SSL_CTX_ctrl wrappers, 64-bit
 * option bits, ERR_GET_REASON). Each returns what the macro returns. */
int tcptop_ssl_ctx_set_proto_versions(SSL_CTX *ctx, int min_version, int max_version);
int tcptop_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups);
/* Partial and moving-buffer writes, buffers released when idle, no renegotiation; `server_preference`:
 * the server's cipher order wins. */
void tcptop_ssl_ctx_set_defaults(SSL_CTX *ctx, int server_preference);
int tcptop_ssl_set_host_name(SSL *ssl, const char *name);
/* Whether `error` (from ERR_get_error) says the peer sent plain HTTP. */
int tcptop_ssl_error_is_http_request(unsigned long error);
/* The certificate's subject alternative names (DNS, IP, e-mail, URI) as
 * text, each ended by a NUL, into `out`; returns the bytes written (names
 * that do not fit are left out). IPs as inet_ntop writes them. */
size_t tcptop_x509_sans(X509 *cert, char *out, size_t size);

/* posix_spawn_file_actions_addclosefrom_np (glibc 2.34+, a GNU extension
 * Swift's Glibc module leaves out): the child closes every descriptor from
 * `lowfd` up. Returns 0 or an errno value. */
int tcptop_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int lowfd);

#endif

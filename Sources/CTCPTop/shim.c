#define _GNU_SOURCE /* accept4 */
#include "CTCPTop.h"
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <string.h>
#include <arpa/inet.h>

static tcptop_log_fn current_logger;

static int forward_libbpf_log(enum libbpf_print_level level, const char *format, va_list args)
{
	if (!current_logger)
		return 0;
	char message[1024];
	int written = vsnprintf(message, sizeof(message), format, args);
	current_logger((int)level, message);
	return written;
}

void tcptop_set_libbpf_logger(tcptop_log_fn fn)
{
	current_logger = fn;
	libbpf_set_print(fn ? forward_libbpf_log : NULL);
}

int tcptop_deflate_init_gzip(z_stream *stream, int level)
{
	/* 15 window bits + 16: write a gzip header and trailer, not zlib's. */
	return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

/* Words of a BPF array that the kernel writes while user space reads it
 * through a shared mapping: loads and stores the compiler cannot fold,
 * tear or reorder. */
uint32_t tcptop_load_acquire_u32(const uint32_t *word) { return __atomic_load_n(word, __ATOMIC_ACQUIRE); }
void tcptop_store_release_u32(uint32_t *word, uint32_t value) { __atomic_store_n(word, value, __ATOMIC_RELEASE); }

int tcptop_caps_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2] = { 0 };
	if (syscall(SYS_capget, &header, data) != 0)
		return -1;
	*effective = (uint64_t)data[1].effective << 32 | data[0].effective;
	*permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
	*inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
	return 0;
}

int tcptop_caps_set(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2] = {
		{ .effective = (uint32_t)effective, .permitted = (uint32_t)permitted, .inheritable = (uint32_t)inheritable },
		{ .effective = (uint32_t)(effective >> 32), .permitted = (uint32_t)(permitted >> 32),
		  .inheritable = (uint32_t)(inheritable >> 32) },
	};
	return (int)syscall(SYS_capset, &header, data);
}

int tcptop_capbset_read(int cap)
{
	int in = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0UL, 0UL, 0UL);
	return in < 0 ? -1 : in;
}

int tcptop_capbset_drop(int cap)
{
	return prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0UL, 0UL, 0UL);
}

int tcptop_ambient_clear_all(void)
{
	return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0UL, 0UL, 0UL);
}

int tcptop_cap_last(void)
{
	int last = 40;
	while (last < 63 && prctl(PR_CAPBSET_READ, (unsigned long)(last + 1), 0UL, 0UL, 0UL) >= 0)
		last++;
	while (last > 0 && prctl(PR_CAPBSET_READ, (unsigned long)last, 0UL, 0UL, 0UL) < 0)
		last--;
	return last;
}

_Static_assert(TCPTOP_EPOLLIN == EPOLLIN && TCPTOP_EPOLLOUT == EPOLLOUT && TCPTOP_EPOLLERR == EPOLLERR
	       && TCPTOP_EPOLLHUP == EPOLLHUP && TCPTOP_EPOLLRDHUP == EPOLLRDHUP, "epoll event bits");

int tcptop_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int epoll_control(int epfd, int op, int fd, uint32_t events)
{
	struct epoll_event event = { .events = events, .data.fd = fd };
	return epoll_ctl(epfd, op, fd, &event);
}

int tcptop_epoll_add(int epfd, int fd, uint32_t events) { return epoll_control(epfd, EPOLL_CTL_ADD, fd, events); }
int tcptop_epoll_modify(int epfd, int fd, uint32_t events) { return epoll_control(epfd, EPOLL_CTL_MOD, fd, events); }
int tcptop_epoll_remove(int epfd, int fd) { return epoll_control(epfd, EPOLL_CTL_DEL, fd, 0); }

int tcptop_epoll_wait(int epfd, int32_t *fds, uint32_t *events, int max, int timeout_ms)
{
	struct epoll_event ready[256];
	if (max > 256)
		max = 256;
	int count = epoll_wait(epfd, ready, max, timeout_ms);
	for (int i = 0; i < count; i++) {
		fds[i] = ready[i].data.fd;
		events[i] = ready[i].events;
	}
	return count;
}

int tcptop_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int tcptop_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int tcptop_ssl_ctx_set_proto_versions(SSL_CTX *ctx, int min_version, int max_version)
{
	return SSL_CTX_set_min_proto_version(ctx, min_version) && SSL_CTX_set_max_proto_version(ctx, max_version);
}

int tcptop_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups) { return (int)SSL_CTX_set1_groups_list(ctx, groups); }

void tcptop_ssl_ctx_set_defaults(SSL_CTX *ctx, int server_preference)
{
	/* Release buffers: an idle kept-alive connection then holds no 34 KB of them. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | (server_preference ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
}

int tcptop_ssl_set_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

int tcptop_ssl_error_is_http_request(unsigned long error)
{
	return ERR_GET_LIB(error) == ERR_LIB_SSL && ERR_GET_REASON(error) == SSL_R_HTTP_REQUEST;
}

size_t tcptop_x509_sans(X509 *cert, char *out, size_t size)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
		char text[INET6_ADDRSTRLEN];
		const char *data = NULL;
		size_t length = 0;
		if (name->type == GEN_DNS || name->type == GEN_EMAIL || name->type == GEN_URI) {
			const ASN1_IA5STRING *string = name->type == GEN_DNS ? name->d.dNSName
				: name->type == GEN_EMAIL ? name->d.rfc822Name : name->d.uniformResourceIdentifier;
			data = (const char *)ASN1_STRING_get0_data(string);
			length = (size_t)ASN1_STRING_length(string);
			if (memchr(data, 0, length))
				continue; /* an embedded NUL would forge a shorter name */
		} else if (name->type == GEN_IPADD) {
			int family = name->d.iPAddress->length == 4 ? AF_INET : name->d.iPAddress->length == 16 ? AF_INET6 : -1;
			if (family < 0 || !inet_ntop(family, name->d.iPAddress->data, text, sizeof(text)))
				continue;
			data = text;
			length = strlen(text);
		} else {
			continue;
		}
		if (used + length + 1 > size)
			continue;
		memcpy(out + used, data, length);
		out[used + length] = 0;
		used += length + 1;
	}
	GENERAL_NAMES_free(names);
	return used;
}

int tcptop_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int lowfd)
{
	return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
}

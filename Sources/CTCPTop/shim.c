#include "CTCPTop.h"
#include <stdarg.h>
#include <stdio.h>

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

/*
 * no-bpf COMMAND [ARG...]: runs COMMAND with the bpf(2) system call refused
 * (EPERM), for it and everything it starts, the way a kernel or a sandbox
 * that forbids BPF would. Used by `make test-without-bpf` to show that the
 * test suite fails quickly and readably, and ends, when no tracer can load.
 *
 * A classic-BPF seccomp filter on seccomp_data.nr (no libseccomp):
 * bpf -> SECCOMP_RET_ERRNO(EPERM); everything else is allowed. Calls made
 * through another system call ABI than this binary's own (x32, i386 on
 * x86_64) are refused the same way rather than let through unchecked.
 *
 *   gcc -O2 -Wall -o no-bpf Tests/tools/no-bpf.c
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "no-bpf: add this architecture's AUDIT_ARCH_* value"
#endif

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: no-bpf COMMAND [ARG...]\n");
        return 2;
    }
    struct sock_filter filter[] = {
        /* Another ABI than ours: refuse (its numbers mean other calls). */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef X32_BIT
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_BIT, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_bpf, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    /* Root (CAP_SYS_ADMIN) may install a filter as it is; anyone else needs
     * no_new_privs first, which also keeps setuid programs from shedding it. */
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        if (errno != EACCES || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
            fprintf(stderr, "no-bpf: installing the seccomp filter: %s\n", strerror(errno));
            return 127;
        }
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "no-bpf: %s: %s\n", argv[1], strerror(errno));
    return 127;
}

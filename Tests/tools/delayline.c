// A user-space delay line between two network namespaces, for tests that
// need a wire with delay and loss on a kernel without netem:
//
//   delayline --ns-a A --ns-b B [--delay-ms 40] [--drop-percent 0]
//             [--drop-match all|data|syn] [--drop-side a|b|both]
//             [--seed 1] [--seconds 60] [--ifname dl0]
//             [--address-a 10.77.0.1] [--address-b 10.77.0.2]
//
// It opens a TUN device in each namespace (a TUN device belongs to the
// namespace its creator is in at TUNSETIFF, so it setns()es first), gives
// them the addresses on a /24 and brings them up, then copies every packet
// read from one to the other after the one-way delay, dropping a share of
// them drawn from a seeded PRNG. `data` matches IPv4 TCP segments with a
// payload, `syn` TCP SYNs without ACK; `--drop-side a` drops only packets
// that came from A (the client's side in the tests).
//
// Prints "READY pid=P" once both devices are up, and at exit (SIGTERM,
// SIGINT or past --seconds) one line
//   "STATS forwarded_ab=N forwarded_ba=N dropped_ab=N dropped_ba=N overflow=N"
// (overflow: packets lost because a direction's queue was full, or a
// write to the device failed). The devices vanish with the process.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOT_BYTES 2048  // tun's MTU is 1500 and no GSO without IFF_VNET_HDR
#define SLOTS 8192       // per direction: ~80 ms of a fast TCP stream

enum match { MATCH_ALL, MATCH_DATA, MATCH_SYN };

struct packet {
    int64_t due_ns;
    int length;
    unsigned char bytes[SLOT_BYTES];
};

// A FIFO: the delay is the same for every packet, so order is release order.
struct queue {
    struct packet *slots;
    int head, count;
};

static volatile sig_atomic_t stopping;
static void on_signal(int signal_number) { (void)signal_number; stopping = 1; }

static void fail(const char *what) {
    fprintf(stderr, "delayline: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// xorshift64*: deterministic for a seed, good enough for loss draws.
static uint64_t prng_state;
static double draw(void) {
    prng_state ^= prng_state >> 12;
    prng_state ^= prng_state << 25;
    prng_state ^= prng_state >> 27;
    return (double)((prng_state * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

// Whether an IPv4 packet is one the --drop-match rule may drop.
static int matches(const unsigned char *p, int length, enum match match) {
    if (match == MATCH_ALL) return 1;
    if (length < 20 || (p[0] >> 4) != 4 || p[9] != 6) return 0;  // IPv4 TCP only
    int ip_header = (p[0] & 15) * 4, total = (p[2] << 8) | p[3];
    if (length < ip_header + 20) return 0;
    const unsigned char *tcp = p + ip_header;
    int tcp_header = (tcp[12] >> 4) * 4, flags = tcp[13];
    if (match == MATCH_SYN) return (flags & 0x02) && !(flags & 0x10);
    return total - ip_header - tcp_header > 0;
}

// Opens the TUN device inside namespace `ns` and gives it `address`/24, up.
static int open_tun(const char *ns, const char *ifname, const char *address, int home) {
    char path[4096];
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    int ns_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) fail(path);
    if (setns(ns_fd, CLONE_NEWNET)) fail("setns");
    close(ns_fd);

    int tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (tun < 0) fail("/dev/net/tun");
    struct ifreq request = {.ifr_flags = IFF_TUN | IFF_NO_PI};
    strncpy(request.ifr_name, ifname, IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &request)) fail("TUNSETIFF");

    int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (control < 0) fail("socket");
    struct sockaddr_in *in = (struct sockaddr_in *)&request.ifr_addr;
    memset(&request.ifr_ifru, 0, sizeof request.ifr_ifru);
    in->sin_family = AF_INET;
    if (inet_pton(AF_INET, address, &in->sin_addr) != 1) {
        fprintf(stderr, "delayline: not an IPv4 address: %s\n", address);
        exit(2);
    }
    if (ioctl(control, SIOCSIFADDR, &request)) fail("SIOCSIFADDR");
    inet_pton(AF_INET, "255.255.255.0", &in->sin_addr);
    if (ioctl(control, SIOCSIFNETMASK, &request)) fail("SIOCSIFNETMASK");
    if (ioctl(control, SIOCGIFFLAGS, &request)) fail("SIOCGIFFLAGS");
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(control, SIOCSIFFLAGS, &request)) fail("SIOCSIFFLAGS");
    close(control);
    if (setns(home, CLONE_NEWNET)) fail("setns back");
    return tun;
}

static void usage(void) {
    fprintf(stderr, "usage: delayline --ns-a A --ns-b B [--delay-ms MS] [--drop-percent P] "
                    "[--drop-match all|data|syn] [--drop-side a|b|both] [--seed N] [--seconds S] "
                    "[--ifname NAME] [--address-a IP] [--address-b IP]\n");
    exit(2);
}

static double number(const char *text, double low, double high, const char *option) {
    char *end;
    double value = strtod(text, &end);
    if (*text == 0 || *end != 0 || value < low || value > high) {
        fprintf(stderr, "delayline: %s must be a number from %g to %g, not %s\n", option, low, high, text);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv) {
    const char *ns[2] = {0, 0}, *address[2] = {"10.77.0.1", "10.77.0.2"}, *ifname = "dl0";
    double delay_ms = 40, drop_percent = 0, seconds = 60;
    enum match match = MATCH_ALL;
    int drop_side[2] = {1, 1};
    uint64_t seed = 1;
    for (int i = 1; i < argc; i += 2) {
        const char *option = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value) usage();
        if (!strcmp(option, "--ns-a")) ns[0] = value;
        else if (!strcmp(option, "--ns-b")) ns[1] = value;
        else if (!strcmp(option, "--address-a")) address[0] = value;
        else if (!strcmp(option, "--address-b")) address[1] = value;
        else if (!strcmp(option, "--ifname")) ifname = value;
        else if (!strcmp(option, "--delay-ms")) delay_ms = number(value, 0, 10000, option);
        else if (!strcmp(option, "--drop-percent")) drop_percent = number(value, 0, 100, option);
        else if (!strcmp(option, "--seconds")) seconds = number(value, 0.1, 86400, option);
        else if (!strcmp(option, "--seed")) seed = (uint64_t)number(value, 0, 1e15, option);
        else if (!strcmp(option, "--drop-match")) {
            if (!strcmp(value, "all")) match = MATCH_ALL;
            else if (!strcmp(value, "data")) match = MATCH_DATA;
            else if (!strcmp(value, "syn")) match = MATCH_SYN;
            else usage();
        } else if (!strcmp(option, "--drop-side")) {
            drop_side[0] = !strcmp(value, "a") || !strcmp(value, "both");
            drop_side[1] = !strcmp(value, "b") || !strcmp(value, "both");
            if (!drop_side[0] && !drop_side[1]) usage();
        } else usage();
    }
    if (!ns[0] || !ns[1]) usage();
    prng_state = seed * 0x9E3779B97F4A7C15ULL + 1;  // never zero

    // A test harness may start us with signals blocked: choose our own mask.
    sigset_t blocked, waiting;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigemptyset(&waiting);
    sigprocmask(SIG_SETMASK, &blocked, NULL);
    struct sigaction action = {.sa_handler = on_signal};
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) fail("/proc/self/ns/net");
    int tun[2] = {open_tun(ns[0], ifname, address[0], home), open_tun(ns[1], ifname, address[1], home)};
    close(home);

    struct queue queues[2];  // [0]: read from A, to be written to B; [1]: B to A
    for (int side = 0; side < 2; side++) {
        queues[side] = (struct queue){.slots = calloc(SLOTS, sizeof(struct packet))};
        if (!queues[side].slots) fail("calloc");
    }
    unsigned long long forwarded[2] = {0, 0}, dropped[2] = {0, 0}, overflow = 0;
    const int64_t delay_ns = (int64_t)(delay_ms * 1e6), end_ns = now_ns() + (int64_t)(seconds * 1e9);
    printf("READY pid=%d\n", getpid());
    fflush(stdout);

    while (!stopping) {
        int64_t now = now_ns();
        if (now >= end_ns) break;
        // Release what is due.
        for (int side = 0; side < 2; side++) {
            struct queue *q = &queues[side];
            while (q->count > 0 && q->slots[q->head].due_ns <= now) {
                struct packet *p = &q->slots[q->head];
                if (write(tun[1 - side], p->bytes, p->length) == p->length) forwarded[side]++;
                else overflow++;
                q->head = (q->head + 1) % SLOTS;
                q->count--;
            }
        }
        // Sleep until the next release, a packet, a signal or the end.
        int64_t wake = end_ns;
        for (int side = 0; side < 2; side++)
            if (queues[side].count > 0 && queues[side].slots[queues[side].head].due_ns < wake)
                wake = queues[side].slots[queues[side].head].due_ns;
        int64_t wait = wake - now > 0 ? wake - now : 0;
        struct timespec timeout = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
        struct pollfd fds[2] = {{.fd = tun[0], .events = POLLIN}, {.fd = tun[1], .events = POLLIN}};
        if (ppoll(fds, 2, &timeout, &waiting) < 0) {
            if (errno == EINTR) continue;
            fail("ppoll");
        }
        for (int side = 0; side < 2; side++) {
            if (!(fds[side].revents & POLLIN)) continue;
            struct queue *q = &queues[side];
            for (int burst = 0; burst < 64; burst++) {
                unsigned char scratch[SLOT_BYTES];
                struct packet *p = q->count < SLOTS ? &q->slots[(q->head + q->count) % SLOTS] : NULL;
                unsigned char *into = p ? p->bytes : scratch;
                ssize_t length = read(tun[side], into, SLOT_BYTES);
                if (length < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (length < 0) fail("read from the TUN device");
                if (!p) {
                    overflow++;
                    continue;
                }
                if (drop_side[side] && drop_percent > 0 && matches(into, (int)length, match) &&
                    (drop_percent >= 100 || draw() * 100 < drop_percent)) {
                    dropped[side]++;
                    continue;
                }
                p->length = (int)length;
                p->due_ns = now_ns() + delay_ns;
                q->count++;
            }
        }
    }
    printf("STATS forwarded_ab=%llu forwarded_ba=%llu dropped_ab=%llu dropped_ba=%llu overflow=%llu\n",
           forwarded[0], forwarded[1], dropped[0], dropped[1], overflow);
    fflush(stdout);
    return 0;
}

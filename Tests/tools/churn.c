// Loopback connection churn at a fixed rate, for the container test:
//   churn SECONDS RATE   prints "port=P connections=N seconds=S"
// Each connection: the client sends 100 bytes, the server end answers 100,
// both close. One process plays both ends (loopback connect completes in
// the kernel before accept), so its figures need no coordination.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int exact_io(int fd, char *buffer, int length, int sending) {
    for (int done = 0; done < length;) {
        ssize_t n = sending ? send(fd, buffer + done, length - done, MSG_NOSIGNAL) : recv(fd, buffer + done, length - done, 0);
        if (n <= 0) return -1;
        done += n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: churn SECONDS RATE\n");
        return 2;
    }
    double seconds = atof(argv[1]), rate = atof(argv[2]);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t size = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, size) || listen(listener, 128) ||
        getsockname(listener, (struct sockaddr *)&address, &size)) {
        perror("churn: listen");
        return 1;
    }
    // Every receive is bounded: a stuck peer ends the run instead of hanging it.
    struct timeval timeout = {.tv_sec = 5};
    char buffer[100];
    memset(buffer, 'x', sizeof buffer);
    long count = 0;
    double start = now();
    while (now() - start < seconds) {
        int client = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        if (connect(client, (struct sockaddr *)&address, sizeof address)) {
            perror("churn: connect");
            return 1;
        }
        int server = accept(listener, NULL, NULL);
        if (server < 0) {
            perror("churn: accept");
            return 1;
        }
        setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        if (exact_io(client, buffer, 100, 1) || exact_io(server, buffer, 100, 0) ||
            exact_io(server, buffer, 100, 1) || exact_io(client, buffer, 100, 0)) {
            perror("churn: exchange");
            return 1;
        }
        close(client);
        close(server);
        count++;
        double ahead = count / rate - (now() - start);
        if (ahead > 0) usleep((useconds_t)(ahead * 1e6));
    }
    printf("port=%d connections=%ld seconds=%.1f\n", ntohs(address.sin_port), count, now() - start);
    return 0;
}

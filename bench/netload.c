/* The proxy workload's upstream and clients, in C so that the figures are the proxies'.
 *
 *   netload echo PORT               a loopback echo server, a thread per connection
 *   netload stream PORT MIB         one connection: MIB MiB sent, the echo read back
 *                                   by a second thread; prints "stream MiB/s"
 *   netload rtt PORT COUNT          one connection: COUNT round trips of 64 bytes;
 *                                   prints "rtt-p50 us" and "rtt-p99 us"
 *   netload conns PORT COUNT        COUNT connections at once (a thread each): connect,
 *                                   64 bytes there and back, close; prints "conns ms"
 *                                   (until the last is done) and "conns-failed N"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A proxy that drops a connection makes it a failure within 10 s, not a hang. */
    struct timeval limit = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    return fd;
}

static int read_full(int fd, char *buffer, size_t length) {
    size_t got = 0;
    while (got < length) {
        ssize_t n = read(fd, buffer + got, length - got);
        if (n <= 0) return -1;
        got += n;
    }
    return 0;
}

static void *echo_one(void *arg) {
    int fd = (int)(long)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t size = 256 * 1024;
    char *buffer = malloc(size);
    for (;;) {
        ssize_t n = read(fd, buffer, size);
        if (n <= 0) break;
        ssize_t sent = 0;
        while (sent < n) {
            ssize_t w = write(fd, buffer + sent, n - sent);
            if (w <= 0) goto done;
            sent += w;
        }
    }
done:
    free(buffer);
    close(fd);
    return NULL;
}

static int echo(int port) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
        listen(listener, 4096) != 0) {
        perror("echo: bind");
        return 1;
    }
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) continue;
        pthread_t thread;
        if (pthread_create(&thread, &attributes, echo_one, (void *)(long)fd) != 0) close(fd);
    }
}

struct drain {
    int fd;
    long long bytes;
};

static void *drain(void *arg) {
    struct drain *d = arg;
    static char buffer[256 * 1024];
    long long got = 0;
    while (got < d->bytes) {
        ssize_t n = read(d->fd, buffer, sizeof buffer);
        if (n <= 0) break;
        got += n;
    }
    d->bytes = got;
    return NULL;
}

static int stream(int port, long long mib) {
    int fd = connect_to(port);
    if (fd < 0) return 1;
    static char buffer[256 * 1024];
    memset(buffer, 'x', sizeof buffer);
    struct drain d = {fd, mib << 20};
    pthread_t reader;
    long long began = now_ns();
    pthread_create(&reader, NULL, drain, &d);
    long long sent = 0;
    while (sent < (mib << 20)) {
        ssize_t n = write(fd, buffer, sizeof buffer);
        if (n <= 0) break;
        sent += n;
    }
    pthread_join(reader, NULL);
    double seconds = (now_ns() - began) / 1e9;
    close(fd);
    printf("stream %.1f MiB/s\n", d.bytes / 1048576.0 / seconds);
    return d.bytes == (mib << 20) ? 0 : 1;
}

static int rtt(int port, int count) {
    int fd = connect_to(port);
    if (fd < 0) return 1;
    char buffer[64];
    memset(buffer, 'p', sizeof buffer);
    long long *samples = calloc(count, sizeof *samples);
    for (int i = 0; i < count; i++) {
        long long began = now_ns();
        if (write(fd, buffer, 64) != 64 || read_full(fd, buffer, 64) != 0) return 1;
        samples[i] = now_ns() - began;
    }
    qsort(samples, count, sizeof *samples, compare);
    printf("rtt-p50 %.1f us\nrtt-p99 %.1f us\n", samples[count / 2] / 1e3,
           samples[count * 99 / 100] / 1e3);
    close(fd);
    return 0;
}

static int conns_port;
static pthread_barrier_t barrier;
static int failed;

static void *one_connection(void *arg) {
    (void)arg;
    pthread_barrier_wait(&barrier);
    char buffer[64];
    memset(buffer, 'c', sizeof buffer);
    int fd = connect_to(conns_port);
    if (fd < 0 || write(fd, buffer, 64) != 64 || read_full(fd, buffer, 64) != 0)
        __atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED);
    if (fd >= 0) close(fd);
    return NULL;
}

static int conns(int port, int count) {
    conns_port = port;
    pthread_t *threads = calloc(count, sizeof *threads);
    pthread_barrier_init(&barrier, NULL, count + 1);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    for (int i = 0; i < count; i++) pthread_create(&threads[i], &attributes, one_connection, NULL);
    pthread_barrier_wait(&barrier);
    long long began = now_ns();
    for (int i = 0; i < count; i++) pthread_join(threads[i], NULL);
    printf("conns %.1f ms\nconns-failed %d n\n", (now_ns() - began) / 1e6, failed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "echo") == 0) return echo(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "stream") == 0) return stream(atoi(argv[2]), atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "rtt") == 0) return rtt(atoi(argv[2]), atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "conns") == 0) return conns(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: netload echo PORT | stream PORT MIB | rtt PORT COUNT | conns PORT COUNT\n");
    return 2;
}

/* The hang fixture: a process that stays alive but stops proving it works.
 *
 *   hang STAMP SECONDS [udp:PORT] [file:PATH]
 *
 * Writes "PID NANOSECONDS" (wall clock) to STAMP when it starts, as stamp.c does. Then
 * for SECONDS it sends a heartbeat every 200 ms, by every means it is given:
 * WATCHDOG=1 to $NOTIFY_SOCKET when that is set (systemd's protocol, which muster
 * speaks); "PID;SECONDS" by UDP to 127.0.0.1:PORT (circus's watchdog plugin); a touch
 * of PATH (for a health-check command that tests the file's age). After the last one
 * it writes "PID NANOSECONDS" to STAMP.last and waits, silent, to be killed. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Writes "PID NS" to `path` atomically (write, then rename). */
static void stamp(const char *path, long long ns) {
    char temp[4096];
    snprintf(temp, sizeof temp, "%s.%d", path, getpid());
    FILE *file = fopen(temp, "w");
    if (!file) return;
    fprintf(file, "%d %lld\n", getpid(), ns);
    fclose(file);
    rename(temp, path);
}

static void notify_socket(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    strncpy(address.sun_path, path, sizeof address.sun_path - 1);
    if (path[0] == '@') address.sun_path[0] = '\0';
    socklen_t length = offsetof(struct sockaddr_un, sun_path) + strlen(path);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    sendto(s, "WATCHDOG=1", 10, 0, (struct sockaddr *)&address, length);
    close(s);
}

static void udp(int port) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char message[64];
    int n = snprintf(message, sizeof message, "%d;%lld", getpid(), now_ns() / 1000000000LL);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    sendto(s, message, n, 0, (struct sockaddr *)&address, sizeof address);
    close(s);
}

static void heartbeat(int argc, char **argv) {
    notify_socket();
    for (int i = 3; i < argc; i++) {
        if (strncmp(argv[i], "udp:", 4) == 0) udp(atoi(argv[i] + 4));
        else if (strncmp(argv[i], "file:", 5) == 0) {
            close(open(argv[i] + 5, O_WRONLY | O_CREAT, 0644));
            utimensat(AT_FDCWD, argv[i] + 5, NULL, 0);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    stamp(argv[1], now_ns());
    long long until = now_ns() + atoll(argv[2]) * 1000000000LL;
    struct timespec period = {0, 200000000L};
    for (;;) {
        heartbeat(argc, argv);
        if (now_ns() >= until) break;
        nanosleep(&period, NULL);
    }
    char last[4096];
    snprintf(last, sizeof last, "%s.last", argv[1]);
    stamp(last, now_ns());
    for (;;) pause();
}
